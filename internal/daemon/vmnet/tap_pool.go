package vmnet

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"banger/internal/errdefs"
)

// TAP device names. Every TAP banger makes starts with TAPPrefix, so the
// reconciler can list them all and nothing else:
//
//   - an idle pool TAP is PoolTAPPrefix + 8 random hex digits ("bgtp1f0c9a3e");
//   - a VM's TAP is TAPPrefix + the first 12 hex digits of the VM id
//     ("bgt3fa85f6457c1"), 15 characters, the most IFNAMSIZ allows.
//
// A VM id is hex, so a VM's TAP never has the 'p' of a pool TAP at that
// place, and VMIDPrefix tells the two apart.
const (
	TAPPrefix     = "bgt"
	PoolTAPPrefix = TAPPrefix + "p"
	vmIDInName    = maxLinkName - len(TAPPrefix)
)

// TAPName is the TAP device name of the VM with id vmID, which must be at
// least 8 lowercase hex digits (store.NewID makes 16).
func TAPName(vmID string) (string, error) {
	if len(vmID) < 8 || strings.Trim(vmID, "0123456789abcdef") != "" {
		return "", fmt.Errorf("tap name for vm %q: %w: want a VM id of at least 8 lowercase hex digits", vmID, errdefs.ErrInvalidArgument)
	}
	return TAPPrefix + vmID[:min(len(vmID), vmIDInName)], nil
}

// VMIDPrefix returns the VM id prefix a VM's TAP name carries (a VM owns
// the TAP when its id starts with it), or false for any other name,
// including idle pool TAPs.
func VMIDPrefix(tapName string) (string, bool) {
	rest, ok := strings.CutPrefix(tapName, TAPPrefix)
	if !ok || len(rest) < 8 || strings.Trim(rest, "0123456789abcdef") != "" {
		return "", false
	}
	return rest, true
}

// TAPPoolOptions configures a TAPPool.
type TAPPoolOptions struct {
	Bridge   string // the bridge every TAP is a port of
	Size     int    // idle TAPs kept ready; 0 keeps none
	MTU      int    // 0 keeps the kernel's default
	Isolated bool   // bridge port isolation: guests cannot reach each other
	// Owner is whom the TAPs are made for (the links must be OwnedTAPs
	// unless it is root); an idle TAP an earlier pool made for another
	// owner is deleted rather than adopted.
	Owner TAPOwner
}

// TAPPool keeps Size idle TAP devices ready, ports of the bridge and
// down, so that giving a VM its TAP costs a rename and a link-up rather
// than a /dev/net/tun creation on a namespace-switched thread.
//
// A VM's TAP is named after the VM (TAPName): Acquire renames an idle one
// to that name, so the ownership of every TAP on the host is visible in
// its name even when the daemon is not running, and the reconciler needs
// no ledger to find a leaked one. Release deletes the TAP rather than
// returning it: a VMM may have changed its flags and offloads, and a
// fresh one costs nothing on the VM's critical path because the pool
// refills in the background.
//
// Idle TAPs outlive Close and are adopted by the next Start.
type TAPPool struct {
	links   Links
	opts    TAPPoolOptions
	log     *slog.Logger
	newName func() string // idle TAP names; a test seam
	retry   time.Duration // wait after a failed refill

	kick chan struct{} // capacity 1: wakes the refill loop
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the refill loop returns

	// mu is a leaf lock: held only to read or change the fields below,
	// never across a netlink call.
	mu      sync.Mutex
	idle    []string // guarded by mu: ready TAPs, oldest first
	started bool     // guarded by mu
	closed  bool     // guarded by mu
}

// NewTAPPool returns a pool over links; Start fills it.
func NewTAPPool(links Links, opts TAPPoolOptions, log *slog.Logger) *TAPPool {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &TAPPool{
		links:   links,
		opts:    opts,
		log:     log,
		newName: randomPoolName,
		retry:   time.Second,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

func randomPoolName() string {
	var b [4]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return PoolTAPPrefix + hex.EncodeToString(b[:])
}

// Start adopts the idle TAPs an earlier pool left (deleting any beyond
// Size), creates the missing ones, and starts refilling in the
// background. It returns the first creation error, the pool running all
// the same (Acquire creates TAPs directly when it is empty).
func (p *TAPPool) Start() error {
	p.mu.Lock()
	if p.started || p.closed {
		p.mu.Unlock()
		return fmt.Errorf("start tap pool: %w: already started or closed", errdefs.ErrFailedPrecondition)
	}
	p.started = true
	p.mu.Unlock()

	existing, err := p.links.ListTAPs(PoolTAPPrefix)
	if err != nil {
		close(p.done)
		return fmt.Errorf("start tap pool: %w", err)
	}
	var adopted []string
	for _, name := range existing {
		if len(adopted) < p.opts.Size && p.ownedRight(name) && p.links.AttachToBridge(name, p.opts.Bridge, p.opts.Isolated) == nil {
			adopted = append(adopted, name)
			continue
		}
		if err := p.links.Delete(name); err != nil && !errors.Is(err, ErrLinkNotFound) {
			p.log.Warn("delete surplus idle tap", "tap", name, "err", err)
		}
	}
	p.mu.Lock()
	p.idle = append(p.idle, adopted...)
	p.mu.Unlock()

	var first error
	for p.deficit() > 0 {
		if err := p.addOne(); err != nil {
			first = fmt.Errorf("fill tap pool: %w", err)
			break
		}
	}
	go p.loop()
	if first != nil {
		p.wake() // keep trying in the background
	}
	return first
}

// ownedRight reports whether an idle TAP left by an earlier pool belongs to
// this pool's owner (links that cannot tell make root's TAPs only).
func (p *TAPPool) ownedRight(name string) bool {
	o, ok := p.links.(OwnedTAPs)
	if !ok {
		return p.opts.Owner == TAPOwner{}
	}
	got, err := o.TAPOwner(name)
	return err == nil && got == p.opts.Owner
}

// deficit is how many idle TAPs are missing.
func (p *TAPPool) deficit() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0
	}
	return p.opts.Size - len(p.idle)
}

// addOne creates one idle TAP and adds it to the pool.
func (p *TAPPool) addOne() error {
	name := p.newName()
	if err := p.links.CreateTAP(name, p.opts.MTU); err != nil {
		return err
	}
	if err := p.links.AttachToBridge(name, p.opts.Bridge, p.opts.Isolated); err != nil {
		if derr := p.links.Delete(name); derr != nil {
			p.log.Warn("delete idle tap after failed attach", "tap", name, "err", derr)
		}
		return err
	}
	p.mu.Lock()
	p.idle = append(p.idle, name)
	p.mu.Unlock()
	return nil
}

// loop refills the pool whenever Acquire takes from it, until Close.
func (p *TAPPool) loop() {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
		for p.deficit() > 0 {
			if err := p.addOne(); err != nil {
				p.log.Warn("refill tap pool", "err", err)
				select {
				case <-p.stop:
					return
				case <-time.After(p.retry):
				}
			}
		}
	}
}

func (p *TAPPool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Idle is the number of idle TAPs ready now.
func (p *TAPPool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Acquire returns the VM's TAP, a port of the bridge and up: an idle one
// renamed to TAPName(vmID), or a new one when the pool is empty. A TAP of
// that name left by an earlier run of the same VM is reused. The caller
// holds the VM's lock, so one VM never acquires twice at once.
func (p *TAPPool) Acquire(vmID string) (string, error) {
	name, err := TAPName(vmID)
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return "", fmt.Errorf("acquire tap for vm %s: %w", vmID, ErrClosed)
	}
	var pooled string
	if len(p.idle) > 0 {
		pooled = p.idle[0]
		p.idle = p.idle[1:]
	}
	p.mu.Unlock()
	p.wake()

	have := false
	if pooled != "" {
		err := p.links.Rename(pooled, name)
		switch {
		case err == nil:
			have = true
		case errors.Is(err, ErrLinkExists):
			p.putBack(pooled) // the VM's own TAP exists: reuse that one
		default:
			p.log.Warn("rename idle tap; creating one instead", "tap", pooled, "vm", vmID, "err", err)
			if derr := p.links.Delete(pooled); derr != nil && !errors.Is(derr, ErrLinkNotFound) {
				p.log.Warn("delete idle tap", "tap", pooled, "err", derr)
			}
		}
	}
	if !have {
		if err := p.links.CreateTAP(name, p.opts.MTU); err != nil && !errors.Is(err, ErrLinkExists) {
			return "", fmt.Errorf("acquire tap for vm %s: %w", vmID, err)
		}
	}
	err = p.links.AttachToBridge(name, p.opts.Bridge, p.opts.Isolated)
	if err == nil {
		err = p.links.SetUp(name)
	}
	if err != nil {
		if derr := p.links.Delete(name); derr != nil && !errors.Is(derr, ErrLinkNotFound) {
			p.log.Warn("delete tap after failed acquire", "tap", name, "vm", vmID, "err", derr)
		}
		return "", fmt.Errorf("acquire tap for vm %s: %w", vmID, err)
	}
	return name, nil
}

// putBack returns an idle TAP to the pool (or deletes it when closed).
func (p *TAPPool) putBack(name string) {
	p.mu.Lock()
	closed := p.closed
	if !closed {
		p.idle = append(p.idle, name)
	}
	p.mu.Unlock()
	if closed {
		if err := p.links.Delete(name); err != nil && !errors.Is(err, ErrLinkNotFound) {
			p.log.Warn("delete idle tap", "tap", name, "err", err)
		}
	}
}

// Release deletes a VM's TAP. A TAP already gone is not an error; a name
// that is not one of banger's TAPs is refused.
func (p *TAPPool) Release(name string) error {
	if _, ok := VMIDPrefix(name); !ok {
		return fmt.Errorf("release tap %q: %w: not a VM's tap", name, errdefs.ErrInvalidArgument)
	}
	if err := p.links.Delete(name); err != nil && !errors.Is(err, ErrLinkNotFound) {
		return fmt.Errorf("release tap: %w", err)
	}
	return nil
}

// Close stops the refill loop and waits for it. The idle TAPs stay (the
// next Start adopts them); Teardown deletes them.
func (p *TAPPool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return
	}
	p.closed = true
	started := p.started
	p.mu.Unlock()
	close(p.stop)
	if !started {
		close(p.done)
	}
	<-p.done
}
