package guestinit

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Env requests the server consumes instead of passing them on.
const (
	envUser     = "BANGER_USER"
	envWorkdir  = "BANGER_WORKDIR"
	envImageEnv = "BANGER_IMAGE_ENV"
)

// command is what a session will run.
type command struct {
	argv    []string
	path    string // the executable; "" for a built-in
	builtin bool
	env     []string
	dir     string
	user    guestUser
	cred    *syscall.Credential
}

// startError is a command that could not start: the message goes to the
// client's stderr, the code is its exit status.
type startError struct {
	code int
	err  error
}

func (e *startError) Error() string { return e.err.Error() }

// prepare resolves who runs what, where, with which environment.
func (sess *session) prepare(cmdline string, shell bool) (*command, error) {
	cfg := &sess.srv.cfg
	passwd, _ := os.ReadFile(filepath.Join(cfg.etcDir, "passwd"))
	group, _ := os.ReadFile(filepath.Join(cfg.etcDir, "group"))
	spec := envGet(sess.env, envUser)
	if spec == "" && sess.login != "" && sess.login != "root" {
		// "ssh dev@guest" runs as dev when the guest knows dev.
		if _, err := resolveUser(sess.login, passwd, group); err == nil {
			spec = sess.login
		}
	}
	c := &command{}
	if spec == "" {
		// As the init runs: root in the guest, whoever runs the tests.
		c.user, _ = resolveUser(strconv.Itoa(os.Geteuid()), passwd, group)
	} else {
		u, err := resolveUser(spec, passwd, group)
		if err != nil {
			return nil, &startError{1, err}
		}
		c.user = u
		// Not root (tests): only our own ids work, and no setgroups.
		c.cred = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups, NoSetGroups: os.Geteuid() != 0}
	}
	u := c.user

	loginShell := u.Shell
	if loginShell == "" || checkExecutable(loginShell) != nil {
		loginShell = cfg.shell
	}
	var sessionEnv []string
	for _, kv := range sess.env {
		k, _, _ := strings.Cut(kv, "=")
		if k != envUser && k != envWorkdir && k != envImageEnv {
			sessionEnv = append(sessionEnv, kv)
		}
	}
	userEnv := []string{"HOME=" + u.Home, "SHELL=" + loginShell}
	if u.Name != "" {
		userEnv = append(userEnv, "USER="+u.Name, "LOGNAME="+u.Name)
	}
	if sess.winsize != nil {
		term := sess.term
		if term == "" {
			term = "vt100"
		}
		userEnv = append(userEnv, "TERM="+term)
	}
	var imageEnv []string
	if envGet(sess.env, envImageEnv) == "1" {
		imageEnv = cfg.ImageEnv
	}
	c.env = mergeEnv(cfg.Env, userEnv, imageEnv, sessionEnv)

	var err error
	if c.dir, err = workdir(envGet(sess.env, envWorkdir), u.Home); err != nil {
		return nil, &startError{1, err}
	}

	switch argv, isArgv, err := decodeArgv(cmdline); {
	case err != nil:
		return nil, &startError{127, err}
	case shell:
		if checkExecutable(loginShell) != nil {
			tried := strings.TrimPrefix(u.Shell+" and ", " and ") + cfg.shell
			return nil, &startError{127, fmt.Errorf("this image has no shell (tried %s); run commands as an argv instead", tried)}
		}
		c.path, c.argv = loginShell, []string{"-" + filepath.Base(loginShell)}
	case isArgv && argv[0] == InitPath:
		c.argv, c.builtin = argv, true
	case isArgv:
		c.argv = argv
		if c.path, err = lookPathIn(argv[0], envGet(c.env, "PATH"), c.dir); err != nil {
			return nil, &startError{exitCodeFor(err), fmt.Errorf("%s: %w", argv[0], err)}
		}
	default:
		if checkExecutable(cfg.shell) != nil {
			return nil, &startError{127, fmt.Errorf("this image has no %s to run a command string; send an argv instead", cfg.shell)}
		}
		c.path, c.argv = cfg.shell, []string{cfg.shell, "-c", cmdline}
	}
	return c, nil
}

// lookPathIn is lookPath with a relative name resolved against dir, where
// the child will run.
func lookPathIn(file, path, dir string) (string, error) {
	if strings.Contains(file, "/") && !filepath.IsAbs(file) {
		if err := checkExecutable(filepath.Join(dir, file)); err != nil {
			return "", err
		}
		return file, nil
	}
	return lookPath(file, path)
}

// workdir is the requested directory (relative to home), or home if it
// exists, or /.
func workdir(requested, home string) (string, error) {
	if requested == "" {
		if fi, err := os.Stat(home); err == nil && fi.IsDir() {
			return home, nil
		}
		return "/", nil
	}
	if !filepath.IsAbs(requested) {
		requested = filepath.Join(home, requested)
	}
	fi, err := os.Stat(requested)
	if err != nil || !fi.IsDir() {
		return "", fmt.Errorf("working directory %s: not a directory in the guest", requested)
	}
	return requested, nil
}
