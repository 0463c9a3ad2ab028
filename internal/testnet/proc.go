package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

const (
	sigHUP  = syscall.SIGHUP
	sigTERM = syscall.SIGTERM
)

// proc is one supervised tor process.
type proc struct {
	node *Node
	cmd  *exec.Cmd
	out  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid once done is closed
}

// startTor launches nd's tor with its torrc and an empty defaults file.
func (n *Network) startTor(nd *Node) error {
	out, err := os.Create(filepath.Join(nd.Dir, "stdout.log"))
	if err != nil {
		return fmt.Errorf("testnet: %s: %w", nd.Name, err)
	}
	cmd := exec.Command(n.opts.TorBinary,
		"--defaults-torrc", n.emptyFile(),
		"-f", filepath.Join(nd.Dir, "torrc"))
	cmd.Dir = nd.Dir
	cmd.Stdout, cmd.Stderr = out, out
	// A small mmap threshold makes glibc return freed memory: 11-13 MB per
	// tor instead of 70-90 MB.
	cmd.Env = append(os.Environ(), "MALLOC_MMAP_THRESHOLD_=131072")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true, // a terminal's ^C goes to us, and we stop tor in order
		Pdeathsig: syscall.SIGTERM,
	}
	if err := n.spawn(cmd.Start); err != nil {
		out.Close()
		return fmt.Errorf("testnet: start %s (%s): %w", nd.Name, n.opts.TorBinary, err)
	}
	p := &proc{node: nd, cmd: cmd, out: out, done: make(chan struct{})}
	nd.proc = p
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return nil
}

// spawn runs start (an exec.Cmd's Start) on a locked OS thread kept for the
// network's lifetime. Pdeathsig follows the thread that forked the child,
// not the process: a child forked by a thread that later exits (a goroutine
// ending while locked to it) would be sent SIGTERM at once.
func (n *Network) spawn(start func() error) error {
	n.spawnOnce.Do(func() {
		n.spawnReq = make(chan func())
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for f := range n.spawnReq {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	n.spawnReq <- func() { errc <- start() }
	return <-errc
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// stop waits up to grace for the (already signalled) process, then kills it.
func (p *proc) stop(grace time.Duration) error {
	p.signal(sigTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	p.signal(syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("testnet: %s (pid %d) did not exit after SIGKILL", p.node.Name, p.cmd.Process.Pid)
	}
}

// PID is the node's process id, or 0 when it is not running.
func (nd *Node) PID() int {
	if nd.proc == nil || nd.proc.exited() {
		return 0
	}
	return nd.proc.cmd.Process.Pid
}

// checkAlive returns an error with a log excerpt if any started tor exited.
func (n *Network) checkAlive(what string) error {
	for _, nd := range n.Nodes {
		if nd.proc != nil && nd.proc.exited() {
			return fmt.Errorf("testnet: %s exited (%v) while waiting for %s:%s", nd.Name, nd.proc.err, what, nd.Excerpt())
		}
	}
	return nil
}

// poll calls check every interval until it reports done, an error, a tor
// dies, or ctx ends. On ctx's end the error names what was awaited and has
// the excerpt of the logs of the nodes given as culprits.
func (n *Network) poll(ctx context.Context, what string, interval time.Duration, culprits []*Node, check func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := n.checkAlive(what); err != nil {
			return err
		}
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			var b strings.Builder
			for _, nd := range culprits {
				b.WriteString(nd.Excerpt())
			}
			return fmt.Errorf("testnet: timed out waiting for %s: %w%s", what, ctx.Err(), b.String())
		case <-t.C:
		}
	}
}

// Excerpt returns the part of the node's tor log that usually explains a
// failure: its last warnings and errors, then its last lines. Each line is
// prefixed with the node's name; the result starts with a newline.
func (nd *Node) Excerpt() string {
	data, err := os.ReadFile(nd.LogFile)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		// tor writes to stdout until it has parsed its configuration.
		data, err = os.ReadFile(filepath.Join(nd.Dir, "stdout.log"))
		if err != nil {
			return fmt.Sprintf("\n  %s: no log: %v", nd.Name, err)
		}
	}
	return excerpt(nd.Name, string(data), 8, 12)
}

// excerpt keeps the last maxWarn [warn]/[err] lines and the last maxTail
// lines of log, in order, without duplicates.
func excerpt(name, log string, maxWarn, maxTail int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(log, "\n"), "\n") {
		if !isBoringWarning(l) {
			lines = append(lines, l)
		}
	}
	keep := make([]bool, len(lines))
	nw := 0
	for i := len(lines) - 1; i >= 0 && nw < maxWarn; i-- {
		if strings.Contains(lines[i], "[warn]") || strings.Contains(lines[i], "[err]") {
			keep[i] = true
			nw++
		}
	}
	for i := max(0, len(lines)-maxTail); i < len(lines); i++ {
		keep[i] = true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n  --- %s log excerpt ---", name)
	prev := -1
	for i, k := range keep {
		if !k {
			continue
		}
		if prev >= 0 && i != prev+1 {
			b.WriteString("\n  ...")
		}
		fmt.Fprintf(&b, "\n  %s: %s", name, lines[i])
		prev = i
	}
	return b.String()
}

// isBoringWarning tells the warnings every test network logs.
func isBoringWarning(line string) bool {
	if !strings.Contains(line, "[warn]") {
		return false
	}
	for _, s := range []string{
		"TestingTorNetwork is set",
		"You are running Tor as root",
		"to specify alternate directory authorities",
		"ControlPort is open, but no authentication method",
		"you disabled SafeLogging",
		"V3AuthVotingInterval is very low",
		"SR state file", "/sr-state\": No such file",
		"approved-routers",
		"is giving Tor only an IP address",
		"404 (\"Not found\") from server", // consensus asked for before the first vote
	} {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}
