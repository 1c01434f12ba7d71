"""VisRel data: the shard format (schema), episodes and the datamodule."""
