#!/bin/sh
# As the official image does when started without a configuration file: no protected mode (the container network
# is the boundary; nothing is published), so the stack's other containers can connect.
if [ "${1:-}" = redis-server ]; then shift; set -- redis-server --protected-mode no "$@"; fi
exec "$@"
