package vmnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"banger/internal/errdefs"
)

// NetNSDir is where named network namespaces are bind-mounted, as
// iproute2's `ip netns` does, so `ip netns exec NAME` works on ours.
const NetNSDir = "/run/netns"

// Namespace is a handle on one network namespace: a named one
// (/run/netns/NAME) or, with the empty name, the daemon's own.
//
// Netlink and nftables reach a namespace through a socket opened inside
// it (netlink.NewHandleAt, nftables.WithNetNSFd), so they need no thread
// switching. Everything else that binds to a namespace at creation time —
// a listening or dialing socket, /dev/net/tun's TUNSETIFF, a write to
// /proc/sys/net, a forked VMM — is done by Do or Go on a goroutine locked
// to an OS thread that has joined the namespace. That thread is never
// handed back to the Go scheduler: the goroutine exits still locked and
// the runtime ends the thread, so no other goroutine ever runs in the
// wrong namespace.
type Namespace struct {
	name string // "" for the daemon's own namespace

	// mu guards fd against Close while a thread joins the namespace or a
	// socket is opened in it, so a closed (and perhaps reused) descriptor
	// is never joined: a closed Namespace fails, it never falls back to
	// the daemon's namespace.
	mu sync.RWMutex
	fd int // guarded by mu; -1 for the daemon's own namespace or once closed
}

// HostNamespace is the daemon's own network namespace.
func HostNamespace() *Namespace { return &Namespace{fd: -1} }

// OpenNetNS opens the named namespace; "" is the daemon's own. A missing
// one is ErrNetNSNotFound.
func OpenNetNS(name string) (*Namespace, error) {
	if name == "" {
		return HostNamespace(), nil
	}
	if err := validNetNSName(name); err != nil {
		return nil, fmt.Errorf("open netns: %w: %v", errdefs.ErrInvalidArgument, err)
	}
	path := netnsPath(name)
	if !isNetNSMount(path) {
		return nil, fmt.Errorf("open netns %q: %w", name, ErrNetNSNotFound)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %q: %w", name, err)
	}
	return &Namespace{name: name, fd: fd}, nil
}

// Name is the namespace's name, "" for the daemon's own.
func (n *Namespace) Name() string { return n.name }

// Path is the namespace's bind mount, "" for the daemon's own.
func (n *Namespace) Path() string {
	if n.name == "" {
		return ""
	}
	return netnsPath(n.name)
}

// Close releases the handle; the namespace itself stays. Using the
// handle afterwards fails with ErrClosed.
func (n *Namespace) Close() error {
	if n.name == "" {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd < 0 {
		return nil
	}
	err := unix.Close(n.fd)
	n.fd = -1
	return err
}

// useFD calls fn with the namespace's descriptor (-1 for the daemon's
// own), holding it open for the call.
func (n *Namespace) useFD(fn func(fd int) error) error {
	if n.name == "" {
		return fn(-1)
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.fd < 0 {
		return fmt.Errorf("netns %q: %w", n.name, ErrClosed)
	}
	return fn(n.fd)
}

// Do runs fn on an OS thread inside the namespace and returns its error.
// Sockets fn creates belong to the namespace for their whole life and may
// be used from any goroutine afterwards; a process fn starts (exec.Cmd's
// Start) is born in the namespace. Goroutines fn starts are not in the
// namespace.
func (n *Namespace) Do(fn func() error) error {
	errc := make(chan error, 1)
	n.Go(func(err error) {
		if err != nil {
			errc <- err
			return
		}
		errc <- fn()
	})
	return <-errc
}

// Go runs fn on a new goroutine locked to an OS thread inside the
// namespace; err says why it could not join it (then fn must not touch
// the network). The thread ends with fn.
func (n *Namespace) Go(fn func(err error)) {
	if n.name == "" {
		go fn(nil)
		return
	}
	n.mu.RLock()
	if n.fd < 0 {
		n.mu.RUnlock()
		go fn(fmt.Errorf("netns %q: %w", n.name, ErrClosed))
		return
	}
	fd := n.fd
	go func() {
		// Never unlocked: the thread ends with this goroutine (see Namespace).
		runtime.LockOSThread()
		err := unix.Setns(fd, unix.CLONE_NEWNET)
		n.mu.RUnlock() // the thread is in (or failed to join); Close may go on
		if err != nil {
			fn(fmt.Errorf("join netns %q: %w", n.name, err))
			return
		}
		fn(nil)
	}()
}

// netlinkHandle opens a netlink handle whose sockets live in n.
func (n *Namespace) netlinkHandle() (*netlink.Handle, error) {
	var h *netlink.Handle
	err := n.useFD(func(fd int) (err error) {
		if fd < 0 {
			h, err = netlink.NewHandle()
		} else {
			h, err = netlink.NewHandleAt(netns.NsHandle(fd))
		}
		return err
	})
	return h, err
}

// EnsureNetNS creates the named network namespace if it does not exist,
// like `ip netns add NAME`: a new namespace bind-mounted on
// /run/netns/NAME (the directory made a shared mount so the namespace is
// visible from other mount namespaces, as iproute2 does), with its
// loopback up. It reports whether it created it. Two processes creating
// the same name at once are not supported.
func EnsureNetNS(name string) (created bool, err error) {
	if err := validNetNSName(name); err != nil {
		return false, fmt.Errorf("create netns: %w: %v", errdefs.ErrInvalidArgument, err)
	}
	path := netnsPath(name)
	if isNetNSMount(path) {
		return false, nil
	}
	fail := func(err error) (bool, error) { return false, fmt.Errorf("create netns %q: %w", name, err) }
	if err := os.MkdirAll(NetNSDir, 0o755); err != nil {
		return fail(err)
	}
	if err := makeShared(NetNSDir); err != nil {
		return fail(err)
	}
	// The mount point; a file left by a crash between create and mount is reused.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0)
	if err != nil {
		return fail(err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: this thread leaves the daemon's namespace for good.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount on %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fail(err)
	}
	if err := loUp(name); err != nil {
		return true, fmt.Errorf("create netns %q: %w", name, err)
	}
	return true, nil
}

func loUp(name string) error {
	ns, err := OpenNetNS(name)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := ns.netlinkHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// DeleteNetNS removes the named namespace's bind mount, like `ip netns
// delete NAME`: the namespace ends when nothing (process, socket, handle)
// holds it any more. A missing one is ErrNetNSNotFound.
func DeleteNetNS(name string) error {
	if err := validNetNSName(name); err != nil {
		return fmt.Errorf("delete netns: %w: %v", errdefs.ErrInvalidArgument, err)
	}
	path := netnsPath(name)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %q: %w", name, ErrNetNSNotFound)
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete netns %q: unmount: %w", name, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("delete netns %q: %w", name, err)
	}
	return nil
}

func netnsPath(name string) string { return filepath.Join(NetNSDir, name) }

// isNetNSMount reports whether path is a namespace bind mount (nsfs).
func isNetNSMount(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// makeShared makes dir a mount point with shared propagation (binding it
// on itself first if it is not a mount point yet).
func makeShared(dir string) error {
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on itself: %w", dir, err)
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

func validNetNSName(name string) error {
	if name == "" || len(name) > 64 || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("bad namespace name %q: want 1 to 64 characters, no '/'", name)
	}
	return nil
}
