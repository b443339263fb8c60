# Builds both binaries, presence (the app server) and gc (the garbage
# collector), into one small image; docker-compose.yml picks the binary.
# The toolchain of go.mod's go line, exactly (a test keeps them equal).
FROM golang:1.26.8 AS build
WORKDIR /src
# Modules first, so that a change of the code alone reuses this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .git stays out of the build context, so go build cannot stamp a version:
# -version, the first log line and presence_build_info say VERSION, e.g.
# docker build --build-arg VERSION=$(git describe --tags --always --dirty) .
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags="-s -w -X github.com/presence/presence/internal/version.stamped=${VERSION}" \
    -o /out/ ./cmd/presence ./cmd/gc

# Static binaries need no libc: distroless "static" has CA certificates (for
# rediss://) and tzdata, no shell, and runs as an unprivileged user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/presence /out/gc /usr/local/bin/
USER nonroot:nonroot
EXPOSE 8080 8081
CMD ["/usr/local/bin/presence"]
