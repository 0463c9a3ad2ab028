package testnet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// makeKeys creates (or reuses) every relay's identity and the authorities'
// v3 keys, in parallel, and fills in Fingerprint and V3Ident.
func (n *Network) makeKeys(ctx context.Context) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, nd := range n.relays() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := n.nodeKeys(ctx, nd)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return n.writeBandwidths()
}

func (n *Network) nodeKeys(ctx context.Context, nd *Node) error {
	keys := filepath.Join(nd.Dir, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return fmt.Errorf("testnet: %s keys: %w", nd.Name, err)
	}
	if nd.Role == RoleAuthority {
		ident, err := n.authorityKeys(ctx, nd, keys)
		if err != nil {
			return err
		}
		nd.V3Ident = ident
	}
	// tor --list-fingerprint costs ~0.5 s of CPU; remember its answer next
	// to the key it describes.
	cache := filepath.Join(nd.Dir, "fingerprint")
	if fp, ok := cachedFingerprint(cache, filepath.Join(keys, "secret_id_key")); ok {
		nd.Fingerprint = fp
		return nil
	}
	fp, err := n.listFingerprint(ctx, nd, keys)
	if err != nil {
		return err
	}
	nd.Fingerprint = fp
	if err := os.WriteFile(cache, []byte(fp+"\n"), 0o644); err != nil {
		return fmt.Errorf("testnet: %s: %w", nd.Name, err)
	}
	return nil
}

// cachedFingerprint returns the fingerprint stored in cache if it is newer
// than the identity key.
func cachedFingerprint(cache, key string) (string, bool) {
	cst, err := os.Stat(cache)
	if err != nil {
		return "", false
	}
	kst, err := os.Stat(key)
	if err != nil || kst.ModTime().After(cst.ModTime()) {
		return "", false
	}
	data, err := os.ReadFile(cache)
	fp := strings.TrimSpace(string(data))
	if err != nil || len(fp) != 40 {
		return "", false
	}
	return fp, true
}

// authorityKeys runs tor-gencert unless a certificate valid for at least
// another week exists, and returns the v3 identity fingerprint.
func (n *Network) authorityKeys(ctx context.Context, nd *Node, keys string) (string, error) {
	idKey := filepath.Join(keys, "authority_identity_key")
	cert := filepath.Join(keys, "authority_certificate")
	if data, err := os.ReadFile(cert); err == nil {
		fp, expires := parseCertificate(data)
		if fp != "" && time.Until(expires) > 7*24*time.Hour {
			if _, err := os.Stat(filepath.Join(keys, "authority_signing_key")); err == nil {
				return fp, nil
			}
		}
	}
	args := []string{"--passphrase-fd", "0", "-m", "12",
		"-a", fmt.Sprintf("127.0.0.1:%d", nd.DirPort),
		"-i", idKey,
		"-s", filepath.Join(keys, "authority_signing_key"),
		"-c", cert}
	if _, err := os.Stat(idKey); err != nil {
		args = append([]string{"--create-identity-key"}, args...)
	}
	cmd := exec.CommandContext(ctx, n.opts.GencertBinary, args...)
	cmd.Stdin = strings.NewReader("\n") // empty passphrase
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testnet: %s: tor-gencert: %w\n%s", nd.Name, err, out)
	}
	data, err := os.ReadFile(cert)
	if err != nil {
		return "", fmt.Errorf("testnet: %s: %w", nd.Name, err)
	}
	fp, _ := parseCertificate(data)
	if fp == "" {
		return "", fmt.Errorf("testnet: %s: no fingerprint line in %s", nd.Name, cert)
	}
	return fp, nil
}

// parseCertificate returns the v3 identity fingerprint and expiry of an
// authority key certificate.
func parseCertificate(data []byte) (fingerprint string, expires time.Time) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "fingerprint "); ok {
			fingerprint = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "dir-key-expires "); ok {
			expires, _ = time.Parse(time.DateTime, strings.TrimSpace(v))
		}
	}
	return fingerprint, expires
}

var fingerprintLine = regexp.MustCompile(`^(\S+) ((?:[0-9A-F]{4} ){9}[0-9A-F]{4})$`)

// listFingerprint makes tor create (or load) the relay identity key in keys
// and returns its RSA fingerprint.
func (n *Network) listFingerprint(ctx context.Context, nd *Node, keys string) (string, error) {
	data := filepath.Join(nd.Dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return "", fmt.Errorf("testnet: %s: %w", nd.Name, err)
	}
	empty := n.emptyFile()
	cmd := exec.CommandContext(ctx, n.opts.TorBinary,
		"--defaults-torrc", empty, "-f", empty,
		"--list-fingerprint",
		"--Nickname", nd.Name,
		"--ORPort", "1",
		"--DataDirectory", data,
		"--KeyDirectory", keys,
		"--GeoIPFile", empty, "--GeoIPv6File", empty,
		"--Log", "warn stdout")
	cmd.Env = append(os.Environ(), "MALLOC_MMAP_THRESHOLD_=131072")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("testnet: %s: tor --list-fingerprint: %w\n%s", nd.Name, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		m := fingerprintLine.FindStringSubmatch(strings.TrimSpace(line))
		if m != nil && m[1] == nd.Name {
			return strings.ReplaceAll(m[2], " ", ""), nil
		}
	}
	return "", fmt.Errorf("testnet: %s: no fingerprint in tor --list-fingerprint output:\n%s", nd.Name, out)
}

// writeBandwidths writes the authorities' V3BandwidthsFile: every relay
// measured at the same bandwidth, with a fresh timestamp (tor ignores files
// older than three days). Without it new relays weigh ~0 and path selection
// collapses onto one node.
func (n *Network) writeBandwidths() error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", time.Now().Unix())
	for _, nd := range n.relays() {
		fmt.Fprintf(&b, "node_id=$%s bw=1000 nick=%s\n", nd.Fingerprint, nd.Name)
	}
	if err := os.WriteFile(n.bandwidthFile(), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("testnet: bandwidth file: %w", err)
	}
	return nil
}
