package fcproc

import "strconv"

// Argv returns the command that starts cfg. It only validates cfg and
// never looks at the host.
//
//	firecracker --api-sock SOCK --id ID
//	nsenter --net=/run/netns/NS -- firecracker --api-sock SOCK --id ID
//	jailer --id ID --exec-file FC --uid U --gid G --chroot-base-dir DIR [--netns /run/netns/NS] -- --api-sock SOCK
//
// The jailer passes --id to Firecracker itself (a second one would be a
// duplicate argument), so after its "--" only Firecracker's other
// arguments follow.
func Argv(cfg Config) ([]string, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if j := cfg.Jailer; j != nil {
		argv := []string{j.Binary,
			"--id", cfg.ID,
			"--exec-file", cfg.Binary,
			"--uid", strconv.Itoa(j.UID),
			"--gid", strconv.Itoa(j.GID),
			"--chroot-base-dir", j.ChrootBaseDir,
		}
		if cfg.NetNS != "" {
			argv = append(argv, "--netns", netNSPath(cfg.NetNS))
		}
		return append(argv, "--", "--api-sock", cfg.APISocket), nil
	}
	var argv []string
	if cfg.NetNS != "" {
		argv = append(argv, "nsenter", "--net="+netNSPath(cfg.NetNS), "--")
	}
	return append(argv, cfg.Binary, "--api-sock", cfg.APISocket, "--id", cfg.ID), nil
}

// IDFromArgv returns the VM id a Firecracker process runs, given its argv
// (for example /proc/PID/cmdline split at NULs), and false when argv is
// not a Firecracker command line: it must carry both --api-sock and --id.
// It recognises what Argv makes, before and after nsenter or the jailer
// exec Firecracker (Firecracker's own argv under the jailer is
// `/firecracker --id ID --start-time-us ... --api-sock SOCK`).
func IDFromArgv(argv []string) (string, bool) {
	var id string
	var haveID, haveSock bool
	for i := 1; i < len(argv); i++ {
		switch argv[i] {
		case "--id":
			if i+1 < len(argv) && !haveID {
				id, haveID = argv[i+1], true
				i++
			}
		case "--api-sock":
			if i+1 < len(argv) {
				haveSock = true
				i++
			}
		}
	}
	if !haveID || !haveSock || !idPattern.MatchString(id) {
		return "", false
	}
	return id, true
}
