"""Recipes that turn a lab's sources into the task folders `pico prep folders` reads (one recipe per source kind).

    python -m data_prep.photos PHOTOS --out RAW                       # restoration, geometry, edges, colourisation, ...
    python -m data_prep.coco instances.json --images IMAGES --out RAW  # COCO-style instance masks -> perception
    python -m data_prep.depth PHOTOS_WITH_DEPTH --out RAW              # depth maps beside photographs -> estimation
    pico prep folders RAW --out DATA                                   # then the shards a run reads

Every recipe writes ``RAW/<category>/<task>/{input,output}/<id>.png`` (pico_lightning/prep/folders.py): one
``<id>`` pairs an input and an output, PNG so that nothing is lost again on the way. Several recipes may write into
one RAW; their task names do not collide. They print what they wrote and every source they skipped, and why.
``data_prep`` imports pico_lightning (its operators and picture reader); pico_lightning never imports it.
"""
