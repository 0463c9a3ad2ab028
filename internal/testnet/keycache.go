package testnet

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// keyFiles are the parts of a node directory that hold its long-term keys.
var keyFiles = []string{"keys", "hs", "fingerprint"}

// loadKeyCache copies the cached keys of every node that has none in Dir.
func (n *Network) loadKeyCache() error {
	if n.opts.KeyCache == "" {
		return nil
	}
	for _, nd := range n.Nodes {
		src := filepath.Join(n.opts.KeyCache, nd.Name)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if hasKeys(nd.Dir) {
			continue
		}
		for _, f := range keyFiles {
			if err := copyTree(filepath.Join(src, f), filepath.Join(nd.Dir, f)); err != nil {
				return fmt.Errorf("testnet: key cache: %w", err)
			}
		}
	}
	return nil
}

func hasKeys(dir string) bool {
	for _, f := range []string{"keys", "hs"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return false
}

// saveKeyCache adds the keys of the nodes of the given roles to the cache
// unless it has them. Each node's entry appears at once (rename), so
// concurrent networks never read half of one. Failures only cost speed and
// are logged.
func (n *Network) saveKeyCache(roles ...Role) {
	if n.opts.KeyCache == "" {
		return
	}
	for _, nd := range n.Nodes {
		want := false
		for _, r := range roles {
			want = want || nd.Role == r
		}
		dst := filepath.Join(n.opts.KeyCache, nd.Name)
		if !want || !hasKeys(nd.Dir) {
			continue
		}
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := saveNodeKeys(nd.Dir, n.opts.KeyCache, dst); err != nil {
			n.logf("key cache: %v", err)
		}
	}
}

func saveNodeKeys(nodeDir, cache, dst string) error {
	if err := os.MkdirAll(cache, 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(cache, ".new-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, f := range keyFiles {
		if err := copyTree(filepath.Join(nodeDir, f), filepath.Join(tmp, f)); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dst); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, serr := os.Stat(dst); serr == nil {
			return nil // another network saved it first
		}
		return err
	}
	return nil
}

// copyTree copies a file or directory (regular files only), keeping modes
// and modification times; a missing src is not an error.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == src {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case d.Type().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if err := os.WriteFile(target, data, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Chtimes(target, info.ModTime(), info.ModTime())
		}
		return nil
	})
}
