#!/usr/bin/env bash
exec python3 -m ziglang ar "$@"
