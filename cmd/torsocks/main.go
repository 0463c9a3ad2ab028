// Command torsocks runs a program with all of its network traffic forced through Tor.
//
//	torsocks [OPTIONS] COMMAND [ARG...]
//
// See internal/run for what happens, and docs/torsocks.1 for the manual.
package main

import (
	"os"

	"github.com/gotorsocks/torsocks/internal/run"
	"github.com/gotorsocks/torsocks/internal/sandbox"
	"github.com/gotorsocks/torsocks/internal/torstart"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == torstart.KeeperArg {
		os.Exit(torstart.RunKeeper(os.Args[2:]))
	}
	sandbox.RunFactoryIfAsked()
	os.Exit(run.Main(os.Args[1:]))
}
