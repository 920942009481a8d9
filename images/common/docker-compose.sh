#!/bin/sh
# `docker-compose`, as GitHub's hosted runners have it: Compose v2 (the docker CLI plugin),
# reached through the docker wrapper so that its services get host networking too.
exec docker compose "$@"
