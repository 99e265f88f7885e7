"""aeris-ds models and stores in other frameworks; each module imports its framework (an optional extra) itself."""
