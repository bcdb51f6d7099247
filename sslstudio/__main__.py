"""``python -m sslstudio``: the command line (:func:`sslstudio.cli.main`).

The guard matters: a process started with multiprocessing's ``spawn`` (the t-SNE / UMAP of an
exploration) imports the main module again as ``__mp_main__``, and must not start the program again.
"""

from sslstudio.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
