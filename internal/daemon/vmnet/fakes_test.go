package vmnet

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
)

// fakeLinks is Links in memory, behaving as the kernel does where banger
// relies on it: names are unique, a link must be down to be renamed,
// deleting a bridge frees its ports. Render prints the state.
type fakeLinks struct {
	mu    sync.Mutex
	links map[string]*fakeLink // guarded by mu
	// failures, consumed one per call, keyed by method name
	fail  map[string][]error // guarded by mu
	delay time.Duration      // each call sleeps this long, outside mu
	calls map[string]int     // guarded by mu
}

type fakeLink struct {
	kind     string // "bridge" or "tuntap"
	up       bool
	master   string
	isolated bool
	mtu      int
	addrs    []string
}

var _ Links = (*fakeLinks)(nil)

func newFakeLinks() *fakeLinks {
	return &fakeLinks{links: map[string]*fakeLink{}, fail: map[string][]error{}, calls: map[string]int{}}
}

// failNext makes the next call of method fail with err.
func (f *fakeLinks) failNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = append(f.fail[method], err)
}

// enter counts a call and returns the injected failure, if any; it is
// called with mu unlocked and returns with mu locked.
func (f *fakeLinks) enter(method string) error {
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	f.mu.Lock()
	f.calls[method]++
	if errs := f.fail[method]; len(errs) > 0 {
		f.fail[method] = errs[1:]
		return errs[0]
	}
	return nil
}

func (f *fakeLinks) EnsureBridge(name string, addr netip.Prefix, mtu int) error {
	if err := f.enter("EnsureBridge"); err != nil {
		f.mu.Unlock()
		return err
	}
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		l = &fakeLink{kind: "bridge"}
		f.links[name] = l
	}
	if l.kind != "bridge" {
		return fmt.Errorf("%q is a %s", name, l.kind)
	}
	if mtu > 0 {
		l.mtu = mtu
	}
	a := addr.String()
	if !contains(l.addrs, a) {
		l.addrs = append(l.addrs, a)
	}
	l.up = true
	return nil
}

func (f *fakeLinks) CreateTAP(name string, mtu int) error {
	if err := f.enter("CreateTAP"); err != nil {
		f.mu.Unlock()
		return err
	}
	defer f.mu.Unlock()
	if _, ok := f.links[name]; ok {
		return fmt.Errorf("create tap %q: %w", name, ErrLinkExists)
	}
	f.links[name] = &fakeLink{kind: "tuntap", mtu: mtu}
	return nil
}

func (f *fakeLinks) AttachToBridge(name, bridge string, isolated bool) error {
	if err := f.enter("AttachToBridge"); err != nil {
		f.mu.Unlock()
		return err
	}
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return fmt.Errorf("link %q: %w", name, ErrLinkNotFound)
	}
	if br, ok := f.links[bridge]; !ok || br.kind != "bridge" {
		return fmt.Errorf("bridge %q: %w", bridge, ErrLinkNotFound)
	}
	l.master, l.isolated = bridge, isolated
	return nil
}

func (f *fakeLinks) Rename(name, newName string) error {
	if err := f.enter("Rename"); err != nil {
		f.mu.Unlock()
		return err
	}
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return fmt.Errorf("link %q: %w", name, ErrLinkNotFound)
	}
	if _, ok := f.links[newName]; ok {
		return fmt.Errorf("rename %q: %w", name, ErrLinkExists)
	}
	if l.up {
		return fmt.Errorf("rename %q: device or resource busy", name)
	}
	delete(f.links, name)
	f.links[newName] = l
	return nil
}

func (f *fakeLinks) SetUp(name string) error {
	if err := f.enter("SetUp"); err != nil {
		f.mu.Unlock()
		return err
	}
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return fmt.Errorf("link %q: %w", name, ErrLinkNotFound)
	}
	l.up = true
	return nil
}

func (f *fakeLinks) Delete(name string) error {
	if err := f.enter("Delete"); err != nil {
		f.mu.Unlock()
		return err
	}
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return fmt.Errorf("link %q: %w", name, ErrLinkNotFound)
	}
	delete(f.links, name)
	if l.kind == "bridge" {
		for _, p := range f.links {
			if p.master == name {
				p.master = ""
			}
		}
	}
	return nil
}

func (f *fakeLinks) ListTAPs(prefix string) ([]string, error) {
	if err := f.enter("ListTAPs"); err != nil {
		f.mu.Unlock()
		return nil, err
	}
	defer f.mu.Unlock()
	var names []string
	for name, l := range f.links {
		if l.kind == "tuntap" && strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

func (f *fakeLinks) Close() error { return nil }

// add puts a link in place, as an earlier run would have left it.
func (f *fakeLinks) add(name string, l fakeLink) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[name] = &l
}

// Render lists the links, one per line, sorted by name.
func (f *fakeLinks) Render() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for n := range f.links {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		l := f.links[n]
		state := "down"
		if l.up {
			state = "up"
		}
		fmt.Fprintf(&b, "%s %s %s", n, l.kind, state)
		if l.master != "" {
			fmt.Fprintf(&b, " master=%s", l.master)
		}
		if l.isolated {
			b.WriteString(" isolated")
		}
		if l.mtu > 0 {
			fmt.Fprintf(&b, " mtu=%d", l.mtu)
		}
		for _, a := range l.addrs {
			fmt.Fprintf(&b, " addr=%s", a)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fakeFirewall is Firewall in memory; Render prints the installed tables.
type fakeFirewall struct {
	mu        sync.Mutex
	tables    map[string]Ruleset // guarded by mu
	applies   int                // guarded by mu
	failApply error              // guarded by mu
}

var _ Firewall = (*fakeFirewall)(nil)

func newFakeFirewall() *fakeFirewall { return &fakeFirewall{tables: map[string]Ruleset{}} }

func (f *fakeFirewall) Apply(rs Ruleset) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failApply != nil {
		return f.failApply
	}
	f.applies++
	f.tables[rs.Table] = rs
	return nil
}

func (f *fakeFirewall) Remove(table string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tables[table]; !ok {
		return fmt.Errorf("remove %s: %w", table, ErrTableNotFound)
	}
	delete(f.tables, table)
	return nil
}

func (f *fakeFirewall) Has(table string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.tables[table]
	return ok, nil
}

func (f *fakeFirewall) Render() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for n := range f.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(f.tables[n].String())
	}
	return b.String()
}

var errInjected = errors.New("injected failure")
