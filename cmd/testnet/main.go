// Command testnet brings up the private Tor network of internal/testnet (in
// whatever network namespace it runs in), prints KEY=VALUE lines describing
// it (SOCKS, SOCKS6, CONTROL, CONTROL_COOKIE, ONION, ...), writes the same
// lines to a ready file, and stays up until SIGINT or SIGTERM.
//
//	go run ./cmd/testnet -dir /tmp/testnet -onion-target 203.0.113.10:80
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gotorsocks/torsocks/internal/testnet"
)

func main() {
	var (
		opts       testnet.Options
		exitSource string
		readyFile  string
		quiet      bool
	)
	flag.StringVar(&opts.Dir, "dir", "", "working directory (keys are reused across runs) (required)")
	flag.StringVar(&opts.TorBinary, "tor", "", "tor binary (default: tor from PATH)")
	flag.IntVar(&opts.BasePort, "base-port", 15000, "first port on 127.0.0.1 for the relays")
	flag.IntVar(&opts.SocksPort, "socks-port", 0, "client SocksPort (default: allocated after base-port)")
	flag.IntVar(&opts.Exits, "exits", 3, "number of exit relays")
	flag.StringVar(&exitSource, "exit-source", "", "address the exits connect out from (OutboundBindAddressExit)")
	flag.StringVar(&opts.OnionTarget, "onion-target", "", "host:port the onion service's port 80 forwards to (none: no onion service)")
	flag.StringVar(&opts.Resolver, "resolver", "", "127.0.0.1:PORT of the DNS server the exits use")
	flag.DurationVar(&opts.Timeout, "timeout", 90*time.Second, "time allowed to bring the network up")
	flag.StringVar(&readyFile, "ready-file", "", "file written with the KEY=VALUE lines once up (default DIR/ready)")
	flag.BoolVar(&quiet, "q", false, "no progress messages on stderr")
	flag.Parse()
	log.SetFlags(0)
	if opts.Dir == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if exitSource != "" {
		a, err := netip.ParseAddr(exitSource)
		if err != nil {
			log.Fatalf("-exit-source: %v", err)
		}
		opts.ExitSource = a
	}
	if !quiet {
		opts.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
		}
	}
	if readyFile == "" {
		readyFile = filepath.Join(opts.Dir, "ready")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		log.Fatal(err)
	}
	os.Remove(readyFile)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tn, err := testnet.Start(ctx, opts)
	if err != nil {
		log.Fatal(err)
	}
	lines := strings.Join(tn.Env(), "\n") + "\n"
	fmt.Print(lines)
	if err := os.WriteFile(readyFile, []byte(lines), 0o644); err != nil {
		tn.Close()
		log.Fatal(err)
	}
	<-ctx.Done()
	os.Remove(readyFile)
	if err := tn.Close(); err != nil {
		log.Fatal(err)
	}
}
