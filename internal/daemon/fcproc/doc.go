// Package fcproc holds banger's Firecracker process primitives: the argv
// that starts Firecracker (directly, in a network namespace through
// nsenter, or under the jailer), a client for the calls banger makes on
// Firecracker's HTTP API over its unix socket, and a Process that starts,
// configures, stops and kills one Firecracker.
//
// It is a leaf: it knows nothing of the daemon, the store or networking
// policy, and imports no other daemon package.
//
// The API. The request and response types in api.go mirror the
// definitions of Firecracker's published API description
// (src/firecracker/swagger/firecracker.yaml, v1.16.1) field for field:
// the JSON names, the types, which fields are required and which enum
// values exist. Only the calls banger makes are here. An error reply
// ({"fault_message": "..."}) becomes an *APIError carrying the status
// code.
//
// Process lifetime. Start's context bounds only the start-up (spawn, wait
// for the API socket to answer). Firecracker itself is tied to no context:
// it runs in its own process group, so a signal to the daemon's terminal
// does not reach it, and it has no parent-death signal, so it outlives a
// daemon restart; a restarted daemon finds it again by its command line
// (IDFromArgv: the VM id is Firecracker's --id) and its API socket.
// Firecracker's stdout and stderr carry the guest's serial console; they
// go to Config.ConsoleLog. Wait and Done may be used from any number of
// goroutines.
//
// Network namespaces. With Config.NetNS set and no jailer, the argv starts
// with `nsenter --net=/run/netns/NAME --`, which enters the namespace and
// execs Firecracker: the PID Start returns is Firecracker's own and the
// daemon's threads never change namespace (the same approach as the qemu
// package). Under the jailer the namespace goes to the jailer's own
// --netns option instead.
//
// The jailer. With Config.Jailer set, Start runs the jailer, which makes
// the jail's own part (the Firecracker copy, dev, run), joins the
// namespace, drops to the uid and gid and execs Firecracker in place (the
// PID is Firecracker's). What the VM needs in the jail is the caller's
// job, before Start: PrepareJail makes a fresh JailRoot holding the given
// files (writable ones hard-linked and handed to the uid and gid) and
// returns the paths Firecracker sees; RemoveJail removes JailDir. Both
// refuse an id or a base that could place the jail elsewhere, and any
// symbolic link from the base down to the VM's directory.
//
// Shutdown. Shutdown asks the guest to power off with the SendCtrlAltDel
// action (the i8042 ctrl-alt-delete; a guest init that called
// reboot(LINUX_REBOOT_CMD_CAD_OFF) receives SIGINT), waits a grace period
// for Firecracker to exit, then sends SIGTERM, then SIGKILL.
package fcproc
