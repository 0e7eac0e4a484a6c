package fcshim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
)

// Firecracker's exit statuses (FcExitCode) the shim uses.
const (
	exitOK               = 0
	exitGenericError     = 1
	exitBadConfiguration = 152
	exitArgParsing       = 153
)

// Defaults of Firecracker's --api-sock and --id.
const (
	defaultAPISock    = "/run/firecracker.socket"
	defaultInstanceID = "anonymous-instance"
)

// Main is the fcshim binary: Firecracker's command line in args (args[0]
// is the program), the guest's serial console on stdout. It returns the
// exit status, or re-raises the signal that stopped it.
func Main(args []string) int {
	if qemuPath := os.Getenv(envExecQEMU); qemuPath != "" {
		return execQEMU(qemuPath, args[1:], os.Stderr)
	}
	return run(args[1:], os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	flags, err := parseFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitArgParsing
	}
	switch {
	case flags.has("help"):
		fmt.Fprint(stdout, usage())
		return exitOK
	case flags.has("version"):
		fmt.Fprintf(stdout, "Firecracker v%s (fcshim, a test-only stand-in)\n\n", VMMVersion)
		return exitOK
	}
	if name, why := flags.unsupportedFlag(); name != "" {
		fmt.Fprintf(stderr, "Error: fcshim (a test-only stand-in for Firecracker) does not emulate --%s: %s\n", name, why)
		return exitGenericError
	}
	id := defaultInstanceID
	if v, ok := flags["id"]; ok {
		id = v
	}
	if err := validInstanceID(id); err != nil {
		fmt.Fprintf(stderr, "Error: Invalid instance ID: %v\n", err)
		return exitGenericError
	}
	if lvl, ok := flags["level"]; ok {
		switch strings.ToLower(lvl) {
		case "off", "trace", "debug", "info", "warn", "warning", "error":
		default:
			fmt.Fprintf(stderr, "Error: InvalidLogLevel(LevelFilterFromStrError(%q))\n", lvl)
			return exitBadConfiguration
		}
	}
	var maxPayload int64
	if v, ok := flags["http-api-max-payload-size"]; ok {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			fmt.Fprintf(stderr, "Error: 'http-api-max-payload-size' parameter expected to be of 'usize' type: %v\n", err)
			return exitGenericError
		}
		maxPayload = int64(n)
	}
	root := os.Getenv(EnvChroot)
	if root != "" && !filepath.IsAbs(root) {
		fmt.Fprintf(stderr, "Error: fcshim: %s=%q is not an absolute path\n", EnvChroot, root)
		return exitGenericError
	}
	logw := stderr
	if path, ok := flags["log-path"]; ok {
		path, err := inRoot(root, path, false)
		var f *os.File
		if err == nil {
			f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND|syscall.O_NONBLOCK, 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "Error: LoggerInitialization(Failed to open target file: %s)\n", osError(err))
			return exitGenericError
		}
		defer f.Close()
		logw = dropWriter{f}
	}
	sock := defaultAPISock
	if v, ok := flags["api-sock"]; ok {
		sock = v
	}
	// Under a jailer the socket is a path inside the chroot.
	hostSock, err := inRoot(root, sock, false)
	if err != nil {
		fmt.Fprintf(stderr, "Error: RunWithApi(FailedToBindSocket(%q)): %v\n", sock, err)
		return exitGenericError
	}
	sock = hostSock

	// The shim's scratch (console FIFO, QMP socket) lives beside its API
	// socket, in the caller's directory, so it goes with that directory
	// even when the shim is killed with SIGKILL and cannot clean up.
	dir, err := os.MkdirTemp(filepath.Dir(sock), ".fcshim-")
	if err != nil {
		fmt.Fprintf(stderr, "Error: fcshim: %v\n", err)
		return exitGenericError
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "Error: fcshim: %v\n", err)
		return exitGenericError
	}
	srv := NewServer(Options{
		ID:         id,
		Booter:     &QEMUBooter{Dir: dir, Console: stdout, Wrapper: self},
		MaxPayload: maxPayload,
		Log:        logw,
		Root:       root,
	})
	defer srv.Close()

	// Firecracker binds the socket path as given, fails if it exists and
	// leaves it behind when it exits; so does the shim, so that tests
	// catch a caller that forgets to remove it.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintf(stderr, "Error: RunWithApi(FailedToBindSocket(%q)): %v\n", sock, err)
		return exitGenericError
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	defer hs.Close()
	fmt.Fprintf(logw, "[fcshim:%s] Running Firecracker v%s (fcshim) on %s\n", id, VMMVersion, sock)

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	booted := srv.Booted()
	var vmDone <-chan struct{}
	for {
		select {
		case <-booted:
			booted, vmDone = nil, srv.VM().Done()
		case <-vmDone:
			// The guest powered off or restarted (or QEMU died): like
			// Firecracker, exit 0 when the VMM stopped cleanly.
			vm := srv.VM()
			code, err := vm.Wait()
			if code != 0 {
				fmt.Fprintf(stderr, "Error: fcshim: QEMU ended (%v)\n", err)
				if o, ok := vm.(interface{ Output() string }); ok {
					fmt.Fprintln(stderr, strings.TrimSpace(o.Output()))
				}
				return exitGenericError
			}
			fmt.Fprintf(logw, "[fcshim:%s] the guest stopped; exiting\n", id)
			return exitOK
		case err := <-served:
			if !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintf(stderr, "Error: fcshim: API server: %v\n", err)
			}
			srv.Stop()
			if vm := srv.VM(); vm != nil {
				<-vm.Done()
			}
			return exitGenericError
		case sig := <-sigc:
			// Kill QEMU first, then die of the same signal, as Firecracker
			// (which does not handle SIGTERM or SIGINT) would.
			fmt.Fprintf(logw, "[fcshim:%s] %v: killing QEMU\n", id, sig)
			srv.Stop()
			if vm := srv.VM(); vm != nil {
				<-vm.Done()
			}
			hs.Close()
			srv.Close()
			os.RemoveAll(dir)
			signal.Reset(sig)
			syscall.Kill(os.Getpid(), sig.(syscall.Signal))
			time.Sleep(time.Second)
			return 128 + int(sig.(syscall.Signal))
		}
	}
}

// validInstanceID is Firecracker's validate_instance_id: 1-64 alphanumerics
// and '-'.
func validInstanceID(id string) error {
	if n := len(id); n < 1 || n > 64 {
		return fmt.Errorf("Invalid len (%d);  the length must be between 1 and 64", n)
	}
	for i, c := range id {
		if c != '-' && !unicode.IsLetter(c) && !unicode.IsNumber(c) {
			return fmt.Errorf("Invalid char (%c) at position %d", c, i)
		}
	}
	return nil
}
