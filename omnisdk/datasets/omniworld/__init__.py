"""OmniWorld: an offline, deterministic multi-modal benchmark generated on this machine."""
