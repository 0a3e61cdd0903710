"""juicer's configuration: one typed settings object, loaded once, passed down.

This package is the only reader of the environment (``JUICER_*`` variables) and of the config file.
"""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
