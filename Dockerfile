# The provisioner image: built with cgo (SQLite), run as a non-root user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags='-s -w' -o /out/provisioner ./cmd/provisioner

FROM debian:bookworm-slim
# postgresql-client: pg_dump and pg_restore (15, as the compose file's server) for the
# daily dump of the provisioner's own database.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tzdata postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/provisioner --create-home provisioner
COPY --from=build /out/provisioner /usr/local/bin/provisioner
USER provisioner
WORKDIR /var/lib/provisioner
ENV PROVISIONER_DATA_DIR=/var/lib/provisioner/data PROVISIONER_ADDR=:8080
EXPOSE 8080
# No curl in the image: the binary asks its own /healthz (docker-compose.yml says the same).
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 CMD ["/usr/local/bin/provisioner", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/provisioner"]
CMD ["serve"]
