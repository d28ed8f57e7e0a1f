# Stand-in for redis:7.2-bookworm built from Debian's redis-server (7.0; see README.md).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN groupadd --system --gid 999 redis \
 && useradd --system --uid 999 --gid redis --home-dir /data --shell /usr/sbin/nologin redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis -m 0750 /data \
 && printf '%s\n' '#!/bin/sh' \
      '# The official image builds redis-server with protected mode off (clients on the container' \
      '# network need no password unless one is set); Debian s build has it on.' \
      'if [ "${1:-}" = redis-server ]; then' \
      '  case " $* " in *" --protected-mode "*) ;; *) set -- "$@" --protected-mode no ;; esac' \
      'fi' \
      'exec "$@"' >/usr/local/bin/docker-entrypoint.sh \
 && chmod 0755 /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
USER 999:999
VOLUME ["/data"]
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["redis-server"]
