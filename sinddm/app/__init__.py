"""The studio: a local web page (Gradio, `pip install sinddm[app]`) on top of `sinddm.SinDDM`.

  commands  pure functions: widget values → API arguments, clicks → boxes, and the `sinddm`
            command line that reproduces each panel's result (no Gradio, unit-tested)
  uploads   what an upload may be (the byte and pixel caps) and the "train hybrid" recipe
  jobs      `Studio`: the active model (switched to an uploaded photo or a hybrid trained on it),
            and one panel run: call the public API, write the PNGs into the output folder, return
            (images, paths, command) or one line for the page
  page      the Gradio page (panels, events, progress); `serve` starts it on 127.0.0.1

The page holds no method logic: every result comes from a `SinDDM` method. `sinddm app` (in
sinddm/cli/app.py) is the command line side.
"""
