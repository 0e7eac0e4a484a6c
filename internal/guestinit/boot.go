package guestinit

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// runInit boots the guest; it never returns.
func runInit() {
	start := time.Now()
	con := &console{w: os.Stderr}
	log := newLogger(con, false)
	var srv *Server
	defer func() {
		if r := recover(); r != nil {
			log.Error("init crashed; powering off", "panic", r, "stack", string(debug.Stack()))
			powerOff(con, log, srv)
		}
	}()

	// The default action of these would end the init and panic the kernel.
	shutdown := make(chan os.Signal, 1)
	signal.Notify(shutdown, unix.SIGTERM, unix.SIGINT, unix.SIGPWR)
	signal.Notify(make(chan os.Signal, 1), unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE, unix.SIGALRM)
	// Ctrl-Alt-Del (Firecracker's SendCtrlAltDel, QEMU's send-key) then
	// sends us SIGINT instead of rebooting at once.
	cadErr := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)

	mountErrs, optional := setupMounts()
	con = openConsole()
	log = newLogger(con, false)
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		log.Error("reading the kernel command line", "err", err)
	}
	cfg, err := ParseCmdline(string(cmdline))
	if cfg.Debug {
		log = newLogger(con, true)
	}
	if err != nil {
		log.Warn("kernel command line", "err", err)
	}
	for _, e := range mountErrs {
		log.Error("mount", "err", e)
	}
	for _, e := range optional {
		log.Info("mount (optional)", "err", e)
	}
	if cadErr != nil {
		log.Warn("disabling Ctrl-Alt-Del reboot", "err", cadErr)
	}
	since := func() int64 { return time.Since(start).Milliseconds() }
	log.Debug("mounted", "ms", since())
	os.Setenv("PATH", defaultPath)
	os.Setenv("HOME", "/root")
	os.Setenv("TERM", "linux")

	reaper := NewReaper(true, log)
	// Bringing links up waits on the kernel (RCU grace periods: tens of ms
	// under TCG), so it overlaps with the rest of the start-up.
	netDone := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				netDone <- fmt.Errorf("panic: %v", r)
			}
		}()
		netDone <- configureNetwork(cfg, log)
	}()
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			log.Error("sethostname", "err", err)
		}
	}
	if err := writeIdentity(cfg, "/etc"); err != nil {
		log.Error("writing /etc", "err", err)
	}
	log.Debug("identity written", "ms", since())

	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		fatal(con, log, srv, "generating the host key", err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		fatal(con, log, srv, "generating the host key", err)
	}
	log.Debug("host key generated", "ms", since())
	con.marker(MarkerHostKey, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))))

	ic, icErr := ReadImageConfig(ImageConfigPath)
	if icErr != nil && !os.IsNotExist(icErr) {
		log.Warn("image config", "err", icErr)
	}
	if len(cfg.AuthorizedKeys) == 0 {
		log.Warn("no banger.authkey: SSH will refuse every client")
	}
	srv, err = NewServer(ServerConfig{
		HostKey:        signer,
		AuthorizedKeys: cfg.AuthorizedKeys,
		UserKeysFile:   UserKeysPath,
		Reaper:         reaper,
		ImageEnv:       ic.Env,
		Poweroff: func() {
			select {
			case shutdown <- unix.SIGTERM:
			default:
			}
		},
		Logger: log,
	})
	if err != nil {
		fatal(con, log, srv, "SSH server", err)
	}
	l, err := net.Listen("tcp", ":22")
	if err != nil {
		fatal(con, log, srv, "listening on port 22", err)
	}
	listenMS := since()
	// READY promises a client can connect: wait for the NIC.
	if err := <-netDone; err != nil {
		log.Error("network", "err", err)
	}
	log.Debug("network configured", "ms", since())
	// READY <ms to ready> listen=<ms to SSH listening>: the first is the
	// init's start to a client being able to connect (the NIC up), the
	// second its own start-up to SSH listening on port 22.
	con.marker(MarkerReady, since(), fmt.Sprintf("listen=%d", listenMS))
	go func() {
		defer srv.recoverLog("ssh server")
		if err := srv.Serve(l); err != nil {
			log.Error("SSH server stopped", "err", err)
		}
	}()

	if cfg.Entrypoint {
		if icErr != nil {
			log.Error("banger.entrypoint=1 but no image config", "err", icErr)
		} else if err := startEntrypoint(ic, os.Environ(), reaper, log); err != nil {
			log.Error("starting the image's entrypoint", "err", err)
		}
	}
	sig := <-shutdown
	log.Info("shutdown requested", "signal", sig.String())
	powerOff(con, log, srv)
}

// fatal logs a failure the guest cannot work without and powers off.
func fatal(con *console, log *slog.Logger, srv *Server, what string, err error) {
	log.Error(what+" failed; powering off", "err", err)
	powerOff(con, log, srv)
}
