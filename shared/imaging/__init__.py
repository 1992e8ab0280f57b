"""Image decoding and rendering shared by the thumbnail stage and the gateway's renditions.

``render`` decodes with bounded limits and renders thumbnails; ``pool`` runs renders in child
processes so a decoder crash or hang kills a child, not the caller.
"""
