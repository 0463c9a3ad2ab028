# The two commands the README starts with:
#   make demo   private Tor network on loopback (own network namespace) + programs through torsocks
#   make test   every test: lint, unit, integration (SOCKS test server, in both SealedNetwork
#               modes) and end to end (real tor)

GO       ?= go
BIN      ?= bin/torsocks
PACKAGES  = ./...

.PHONY: all build deps demo test lint unit unit-host arm64 bench fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/torsocks

# Installs what the tests and the demo need on a bare Debian 12 machine (root).
deps:
	scripts/install-deps.sh

demo: deps build
	scripts/demo.sh

test: deps lint unit unit-host arm64

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet $(PACKAGES)
	$$($(GO) env GOPATH)/bin/staticcheck $(PACKAGES)
	GOARCH=arm64 CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/torsocks
	GOARCH=amd64 CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/torsocks

unit:
	$(GO) test -race -count=1 -timeout 40m $(PACKAGES)

# unit runs the integration suite in the default mode (SealedNetwork 1, the program's TCP sockets
# in the sandbox). This runs it again in the host mode, SealedNetwork 0: what torsocks falls back
# to when no sandbox can be made, and what users may choose. Without -race (unit ran the same
# supervisor code under it; the host path differs in which branches run, not in its concurrency),
# and without the TestSealed* tests, which set the mode themselves and ran in unit: 50 s on a
# loaded 2-CPU VM.
unit-host:
	TORSOCKS_SEALED_NETWORK=0 $(GO) test -count=1 -timeout 20m -skip '^TestSealed' ./internal/integration/

# arm64: the tests of the packages that do not need the kernel's seccomp notifications, run under
# qemu-user (the filter's arm64 syscall numbers among them). qemu-user emulates neither seccomp
# listeners nor NETLINK_SOCK_DIAG, so the supervisor's integration tests need a real arm64 machine;
# nor getsockopt(SO_COOKIE) (EINVAL), which TestSockCacheMatchesKernel compares against the kernel:
# it runs natively in unit.
ARM64_PACKAGES = ./internal/filter ./internal/socks5 ./internal/config ./internal/dns ./internal/standin \
	./internal/policy ./internal/tslog ./internal/portgate ./internal/supervisor ./internal/acceptloop \
	./internal/torcontrol
arm64:
	GOARCH=arm64 CGO_ENABLED=0 $(GO) test -count=1 -exec qemu-aarch64 -skip '^TestSockCacheMatchesKernel$$' $(ARM64_PACKAGES)

bench: build
	scripts/bench.sh

clean:
	rm -rf bin
