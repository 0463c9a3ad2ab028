package run

import (
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/gotorsocks/torsocks/internal/config"
	"github.com/gotorsocks/torsocks/internal/filter"
)

// early is the work of a run that depends on nothing but its configuration, started as soon as
// the configuration is read and done on goroutines of its own while torsocks opens its log and
// makes its refusal checks (on a 2-core machine, on the other core): building the seccomp filter
// (~0.25 ms of CPU) and, when TorStart auto may start the user's own tor, probing the SocksPort
// (a TCP connect to it). Each result is awaited where it was computed before (refusals,
// useOwnTor), so nothing changes order: a filter that cannot be built still refuses after the
// other refusal checks and before anything is opened, and the filter the program starts under is
// the one built from this configuration. Their goroutines only compute: the filter build touches
// nothing shared (filter.Build reads the ABI tables), and the probe's connection is closed at once.
type early struct {
	filterDone chan struct{} // closed once prog and filterErr are set
	prog       []unix.SockFilter
	filterErr  error

	probeDone chan struct{} // nil: no probe was started; else closed once probeOK is set
	probed    netip.AddrPort
	probeOK   bool
}

// startEarly starts the early work of cfg.
func startEarly(cfg *config.Config) *early {
	e := &early{filterDone: make(chan struct{})}
	opts := filter.Options{EnableIPv6: cfg.EnableIPv6, VetReceived: cfg.VetReceivedSockets, SealedTCP: cfg.SealedNetwork}
	go func() {
		e.prog, e.filterErr = filter.Build(filter.HostABIs, opts)
		close(e.filterDone)
	}()
	if needsProbe(cfg) {
		e.probeDone = make(chan struct{})
		e.probed = cfg.SocksAddr
		go func() {
			e.probeOK = answers(e.probed)
			close(e.probeDone)
		}()
	}
	return e
}

// filter returns the program's filter, once built.
func (e *early) filter() ([]unix.SockFilter, error) {
	<-e.filterDone
	return e.prog, e.filterErr
}

// socksAnswers reports whether something answers on addr, the SocksPort of cfg: the early probe's
// answer when one was started for it, else a probe now.
func (e *early) socksAnswers(addr netip.AddrPort) bool {
	if e == nil || e.probeDone == nil || addr != e.probed {
		return answers(addr)
	}
	<-e.probeDone
	return e.probeOK
}

// needsProbe tells whether useOwnTor will ask whether the SocksPort answers.
func needsProbe(cfg *config.Config) bool {
	return cfg.TorStart == config.TorStartAuto && !cfg.SocksExplicit
}
