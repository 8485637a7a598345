# syntax=docker/dockerfile:1
# One image for every component: the entrypoint is the console script and each
# Kubernetes workload passes its own arguments (coordinator, commserver, operator).
#   docker build -t webrtc-broker:0.1.0 .
#   docker run --rm -p 9090:9090 webrtc-broker:0.1.0 coordinator --host 0.0.0.0
# BASE is any image with Python 3.11 as `python` (with venv), groupadd,
# useradd and the C++ runtime (libstdc++6, which the comm server's media
# wheels link against): tests/k8s/image.py passes one made from Debian's
# packages, so that the image is built without a registry.

ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/webrtc-broker
COPY pyproject.toml README.md ./
COPY webrtc_broker ./webrtc_broker
COPY coordinator ./coordinator
COPY commserver ./commserver
COPY operator ./operator
RUN /opt/webrtc-broker/bin/pip install --upgrade pip \
    && /opt/webrtc-broker/bin/pip install '.[server,operator]'

FROM ${BASE} AS runtime
# The same uid/gid as runAsUser/runAsGroup in the operator's pod specs.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid broker --no-create-home --shell /usr/sbin/nologin broker
COPY --from=build /opt/webrtc-broker /opt/webrtc-broker
ENV PATH=/opt/webrtc-broker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# coordinator, comm server status/metrics, operator metrics and health
EXPOSE 9090 9100 8080 8081
ENTRYPOINT ["webrtc-broker"]
CMD ["--help"]
