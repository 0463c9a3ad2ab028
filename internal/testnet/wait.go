package testnet

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gotorsocks/torsocks/internal/torcontrol"
)

// consensusRouter is one router entry of a consensus.
type consensusRouter struct {
	Nickname string
	Flags    []string
	// Microdesc is the digest of its microdescriptor (microdesc flavor only).
	Microdesc string
}

// parseConsensus returns the valid-after line and the routers of a
// network-status consensus document.
func parseConsensus(data []byte) (validAfter string, routers []consensusRouter) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "valid-after "):
			validAfter = strings.TrimPrefix(line, "valid-after ")
		case strings.HasPrefix(line, "r "):
			f := strings.Fields(line)
			if len(f) > 1 {
				routers = append(routers, consensusRouter{Nickname: f[1]})
			}
		case strings.HasPrefix(line, "s ") && len(routers) > 0:
			routers[len(routers)-1].Flags = strings.Fields(line)[1:]
		case strings.HasPrefix(line, "m ") && len(routers) > 0:
			routers[len(routers)-1].Microdesc = strings.TrimSpace(line[2:])
		}
	}
	return validAfter, routers
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

// waitDescriptors waits until every authority holds every relay's server
// descriptor (in its descriptor cache journal).
func (n *Network) waitDescriptors(ctx context.Context) error {
	relays := n.relays()
	var auths []*Node
	for _, nd := range relays {
		if nd.Role == RoleAuthority {
			auths = append(auths, nd)
		}
	}
	return n.poll(ctx, "every relay's descriptor at every authority", 100*time.Millisecond, relays, func() (bool, error) {
		for _, a := range auths {
			have := map[string]bool{}
			for _, f := range []string{"cached-descriptors", "cached-descriptors.new"} {
				data, err := os.ReadFile(filepath.Join(a.Dir, "data", f))
				if err != nil {
					continue
				}
				for _, line := range strings.Split(string(data), "\n") {
					if rest, ok := strings.CutPrefix(line, "router "); ok {
						nick, _, _ := strings.Cut(rest, " ")
						have[nick] = true
					}
				}
			}
			for _, nd := range relays {
				if !have[nd.Name] {
					return false, nil
				}
			}
		}
		return true, nil
	})
}

// rescheduleVote moves the authorities' first vote to voteLead from now
// (rounded up to a whole second) by rewriting their torrcs and sending them
// SIGHUP, unless the provisional vote is about as soon.
func (n *Network) rescheduleVote() error {
	vote := time.Now().Add(voteLead).Truncate(time.Second).Add(time.Second)
	if n.firstVote.Sub(vote) < time.Second {
		return nil
	}
	n.firstVote = vote
	for _, nd := range n.Nodes {
		if nd.Role != RoleAuthority {
			continue
		}
		if err := n.writeTorrc(nd); err != nil {
			return err
		}
		if err := nd.proc.signal(sigHUP); err != nil {
			return fmt.Errorf("testnet: SIGHUP %s: %w", nd.Name, err)
		}
	}
	return nil
}

// waitConsensus waits until an authority's cached consensus lists every
// relay as Running and Valid.
func (n *Network) waitConsensus(ctx context.Context) error {
	relays := n.relays()
	var auths []*Node
	for _, nd := range relays {
		if nd.Role == RoleAuthority {
			auths = append(auths, nd)
		}
	}
	lastSeen := ""
	return n.poll(ctx, "a consensus listing every relay Running", 200*time.Millisecond, auths, func() (bool, error) {
		for _, a := range auths {
			data, err := os.ReadFile(filepath.Join(a.Dir, "data", "cached-consensus"))
			if err != nil {
				continue
			}
			va, routers := parseConsensus(data)
			running := map[string]bool{}
			for _, r := range routers {
				if hasFlag(r.Flags, "Running") && hasFlag(r.Flags, "Valid") {
					running[r.Nickname] = true
				}
			}
			var missing []string
			for _, nd := range relays {
				if !running[nd.Name] {
					missing = append(missing, nd.Name)
				}
			}
			if seen := fmt.Sprintf("%s %v", va, missing); seen != lastSeen {
				lastSeen = seen
				msg := ""
				if len(missing) > 0 {
					msg = fmt.Sprintf(" (not yet: %s)", strings.Join(missing, ", "))
				}
				n.logf("%s: consensus valid-after %s: %d/%d relays Running%s", a.Name, va, len(relays)-len(missing), len(relays), msg)
			}
			if len(missing) == 0 {
				return true, nil
			}
		}
		return false, nil
	})
}

// microdescDigests returns the digests (unpadded base64 SHA-256, as in a
// consensus's "m" lines) of the microdescriptors in a tor microdescriptor
// cache file, whose entries are each preceded by an "@last-listed" line.
func microdescDigests(data []byte, into map[string]bool) {
	for len(data) > 0 {
		if bytes.HasPrefix(data, []byte("@")) {
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				data = data[i+1:]
				continue
			}
			return
		}
		end := bytes.Index(data, []byte("\n@"))
		if end < 0 {
			end = len(data)
		} else {
			end++
		}
		sum := sha256.Sum256(data[:end])
		into[base64.RawStdEncoding.EncodeToString(sum[:])] = true
		data = data[end:]
	}
}

// waitDirInfo waits until every relay holds a microdesc consensus listing
// every relay Running and all the microdescriptors it names. Clients fetch
// microdescriptors from any directory cache; one that lacks some makes a
// client wait ~10 s to retry.
func (n *Network) waitDirInfo(ctx context.Context) error {
	relays := n.relays()
	ready := map[string]bool{}
	return n.poll(ctx, "every relay to hold the consensus and every microdescriptor", 200*time.Millisecond, relays, func() (bool, error) {
		for _, nd := range relays {
			if ready[nd.Name] {
				continue
			}
			data, err := os.ReadFile(filepath.Join(nd.Dir, "data", "cached-microdesc-consensus"))
			if err != nil {
				return false, nil
			}
			_, routers := parseConsensus(data)
			byName := map[string]consensusRouter{}
			for _, r := range routers {
				byName[r.Nickname] = r
			}
			have := map[string]bool{}
			for _, f := range []string{"cached-microdescs", "cached-microdescs.new"} {
				if md, err := os.ReadFile(filepath.Join(nd.Dir, "data", f)); err == nil {
					microdescDigests(md, have)
				}
			}
			for _, want := range relays {
				r, ok := byName[want.Name]
				if !ok || !hasFlag(r.Flags, "Running") || !have[r.Microdesc] {
					return false, nil
				}
			}
			ready[nd.Name] = true
		}
		return true, nil
	})
}

// waitBootstrap waits for the client's "Bootstrapped 100%".
func (n *Network) waitBootstrap(ctx context.Context) error {
	client := n.node(RoleClient)
	var cc *torcontrol.Conn
	defer func() {
		if cc != nil {
			cc.Close()
		}
	}()
	lastTag := ""
	return n.poll(ctx, "the client to bootstrap", 250*time.Millisecond, []*Node{client}, func() (bool, error) {
		if cc == nil {
			if _, err := os.Stat(n.CookieFile); err != nil {
				return false, nil // tor has not opened its ControlPort yet
			}
			c, err := n.dialControl(ctx)
			if err != nil {
				return false, nil
			}
			cc = c
		}
		v, err := cc.GetInfo("status/bootstrap-phase")
		if err != nil {
			cc.Close()
			cc = nil
			return false, nil
		}
		// NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"
		fields, err := torcontrol.Fields(v)
		if err != nil {
			return false, err
		}
		kv := torcontrol.KeyValues(fields)
		tag, progress := kv["TAG"], kv["PROGRESS"]
		if tag != lastTag {
			lastTag = tag
			n.logf("client bootstrap %s%% %s", progress, tag)
		}
		return progress == "100", nil
	})
}

// waitOnion reads the onion service's address and waits until the client
// can fetch its descriptor from an HSDir (HSFETCH, HS_DESC RECEIVED).
func (n *Network) waitOnion(ctx context.Context) error {
	onion := n.node(RoleOnion)
	client := n.node(RoleClient)
	hostFile := filepath.Join(onion.Dir, "hs", "hostname")
	err := n.poll(ctx, "the onion service's hostname file", 100*time.Millisecond, []*Node{onion}, func() (bool, error) {
		data, err := os.ReadFile(hostFile)
		if err != nil {
			return false, nil
		}
		n.OnionHost = strings.TrimSpace(string(data))
		return strings.HasSuffix(n.OnionHost, ".onion"), nil
	})
	if err != nil {
		return err
	}
	addr := strings.TrimSuffix(n.OnionHost, ".onion")

	cc, err := n.dialControl(ctx)
	if err != nil {
		return err
	}
	defer cc.Close()
	if _, err := cc.Do("SETEVENTS HS_DESC"); err != nil {
		return err
	}
	replies := make(chan torcontrol.Reply, 16)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop) // runs before cc.Close, which ends the reader
	go func() {
		for {
			r, err := cc.Read()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case replies <- r:
			case <-stop:
				return
			}
		}
	}()

	// One HSFETCH asks one HSDir; ask again after a failure or silence.
	attempt := time.NewTimer(0)
	defer attempt.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	failures := 0
	var lastFailure string
	timedOut := func() error {
		msg := "no answer"
		if lastFailure != "" {
			msg = fmt.Sprintf("%d failed fetches, last: %s", failures, lastFailure)
		}
		return fmt.Errorf("testnet: timed out waiting for the client to fetch the descriptor of %s (%s): %w%s%s",
			n.OnionHost, msg, ctx.Err(), onion.Excerpt(), client.Excerpt())
	}
	for {
		select {
		case r := <-replies:
			line := strings.Join(r.Lines, " ")
			switch {
			case r.Code == 650 && strings.HasPrefix(line, "HS_DESC RECEIVED "+addr+" "):
				return nil
			case r.Code == 650 && strings.HasPrefix(line, "HS_DESC FAILED "+addr+" "):
				failures++
				lastFailure = line
				attempt.Reset(500 * time.Millisecond)
			case r.Code/100 != 2 && r.Code != 650:
				// HSFETCH refused (e.g. no usable HSDir yet).
				lastFailure = r.String()
				attempt.Reset(time.Second)
			}
		case <-attempt.C:
			if err := cc.Send("HSFETCH " + addr); err != nil {
				return err
			}
			attempt.Reset(5 * time.Second)
		case err := <-readErr:
			if ctx.Err() != nil {
				return timedOut()
			}
			return err
		case <-tick.C:
			if err := n.checkAlive("the onion descriptor"); err != nil {
				return err
			}
		case <-ctx.Done():
			return timedOut()
		}
	}
}
