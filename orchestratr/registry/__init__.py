"""What apps there are: ``config.yml`` + ``apps.d/*.yml`` + runtime registrations -> a Registry.

``model.py`` (frozen attrs models, the manifest's one spelling), ``keys.py`` (the leader and
chord grammar the config speaks), ``validate.py`` (rules beyond types), ``load.py`` (YAML ->
Registry, every problem named by file, app and field), ``runtime.py`` (``POST /apps``, kept in
``registered.json``), ``watch.py`` (hot reload).

May not import the core (``supervisor/``) or any adapter: the supervisor reads registries, not
the other way round.
"""
