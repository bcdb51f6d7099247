"""Look inside a backbone: embedding maps, nearest-neighbour galleries, activation maps and shortcut checks,
over the comparison's feature cache (``sslstudio explore`` and the window's Explore page).

The engine half (no Qt)::

    from sslstudio.explore import ExploreConfig, explore
    result = explore(ExploreConfig(out="explore", run="runs/rotation", inits=("random",),
                                   labelled="data/labelled", method="pca"))
    result["inits"][0]["coords"]      # float32 [N, 2], row i = result["paths"][i]
    result["inits"][0]["neighbours"]  # Neighbours(indices, similarities) of the query

Building blocks: :func:`load_explore_set` (the images), :func:`map_features` (pooled, L2-normalised rows),
:func:`project` (PCA / t-SNE / UMAP), :func:`cluster_labels` (k-means colours), :func:`nearest` (the gallery).
"""

from sslstudio.explore.data import DEFAULT_LIMIT, ExploreSet, load_explore_set, load_query_image
from sslstudio.explore.embedding import (METHODS, Projection, available_methods, check_method, cluster_labels,
                                         map_features, project, read_embedding_csv, write_embedding_csv,
                                         write_embedding_png)
from sslstudio.explore.neighbours import DEFAULT_K, GalleryRow, Neighbours, gallery_size, nearest, write_gallery_png
from sslstudio.explore.run import ExploreConfig, explore, plan_exploration, summary_json

__all__ = ["DEFAULT_K", "DEFAULT_LIMIT", "METHODS", "ExploreConfig", "ExploreSet", "GalleryRow", "Neighbours",
           "Projection", "available_methods", "check_method", "cluster_labels", "explore", "gallery_size",
           "load_explore_set", "load_query_image", "map_features", "nearest", "plan_exploration", "project",
           "read_embedding_csv", "summary_json", "write_embedding_csv", "write_embedding_png", "write_gallery_png"]
