"""The ``weince`` command line: ``weince demo``, ``weince crosscheck``, ``weince bench``,
``weince diagnose``."""
