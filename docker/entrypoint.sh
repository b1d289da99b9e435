#!/bin/sh
# Huiliu's container entrypoint: the image's sample config serves the API with the sample token unless
# HUILIU_API_TOKEN is set, so `serve` does not start until it is (or until a config of your own is mounted).
set -eu
config="${HUILIU_CONFIG:-/app/config.yaml}"
case " $* " in
*" serve "*)
    if [ -z "${HUILIU_API_TOKEN:-}" ] && grep -q 'HUILIU_API_TOKEN' "$config" 2>/dev/null; then
        echo "huiliu: HUILIU_API_TOKEN is not set, and $config would then guard the API with the sample token." \
            "Set it to a strong token (docker run -e HUILIU_API_TOKEN=\"\$(openssl rand -base64 32)\" ...," \
            "or 'docker run --rm IMAGE huiliu token new --raw'), or mount your own config at $config." >&2
        exit 78
    fi
    ;;
esac
exec "$@"
