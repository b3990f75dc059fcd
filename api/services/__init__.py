"""Application services: the use cases the JSON API and the dashboard share. Each takes the collaborators it uses
(commands, read-model pool, settings), is built in api/composition.py and raises api/services/errors.py's
refusals, which api/errors.py alone turns into HTTP answers."""
