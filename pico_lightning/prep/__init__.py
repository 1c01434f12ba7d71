"""Offline VisRel builders: the VisRel-lite demo set, the raw-folder converter and the atomic shard writer."""
