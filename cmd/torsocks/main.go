// Command torsocks runs a program with all of its network traffic forced through Tor.
//
//	torsocks [OPTIONS] COMMAND [ARG...]
//
// See internal/run for what happens, and docs/torsocks.1 for the manual.
package main

import (
	"os"

	"github.com/gotorsocks/torsocks/internal/launch"
	"github.com/gotorsocks/torsocks/internal/run"
	"github.com/gotorsocks/torsocks/internal/sandbox"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case launch.HelperArg:
			launch.RunHelper(os.Args[2:])
		case sandbox.FactoryArg:
			sandbox.RunFactory()
		}
	}
	os.Exit(run.Main(os.Args[1:]))
}
