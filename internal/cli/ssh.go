package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/guestinit"
	"banger/internal/rpc"
)

// proxyCommand is what a user's ssh runs as its ProxyCommand: it splices
// stdin and stdout to the guest's SSH port through the daemon's socket.
func (a *app) proxyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "proxy NAME",
		Short: "Connect stdin/stdout to a VM's SSH port through the daemon (ssh's ProxyCommand)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := context.Background()
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			call, err := c.Start(ctx, rpc.MethodVMProxy, rpc.NameRef{Ref: args[0]}, true)
			if err != nil {
				return err
			}
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := os.Stdin.Read(buf)
					if n > 0 && call.Send(rpc.InputStdin, buf[:n]) != nil {
						return
					}
					if err != nil {
						call.Send(rpc.InputEOF, nil)
						return
					}
				}
			}()
			return call.Wait(ctx, func(ev rpc.StreamEvent) error {
				var b []byte
				if err := json.Unmarshal(ev.Data, &b); err != nil {
					return err
				}
				_, err := a.stdout.Write(b)
				return err
			}, nil)
		},
	}
}

// sshConfigCommand prints ssh_config entries that reach running VMs with
// the user's own ssh (and editors' remote modes) through `banger proxy`,
// after adding the user's public key to each VM and the VMs' host keys to
// banger's known_hosts file.
func (a *app) sshConfigCommand() *cobra.Command {
	var identity, knownHosts string
	cmd := &cobra.Command{
		Use:   "ssh-config [NAME...]",
		Short: "Print ssh_config entries for running VMs (your key is added to them); use with ssh -F or Include",
		Long: `Print ssh_config entries for the named running VMs (all running VMs by
default). Your public key (--identity, default ~/.ssh/id_ed25519.pub, then
id_ecdsa.pub, id_rsa.pub) is added to each VM, and each VM's host key to
banger's known_hosts file, so that

  banger ssh-config > ~/.ssh/banger.conf   # and "Include banger.conf" in ~/.ssh/config
  ssh NAME.vm.banger

works, as do scp and editors' remote modes.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			key, err := readIdentity(identity)
			if err != nil {
				return err
			}
			if knownHosts == "" {
				home, _ := os.UserHomeDir()
				knownHosts = filepath.Join(home, ".config", "banger", "known_hosts")
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			return a.withClient(ctx, func(c *rpc.Client) error {
				vms, err := a.sshTargets(ctx, c, args)
				if err != nil {
					return err
				}
				var hosts []string
				for _, vm := range vms {
					if code, err := a.execInVM(rpc.VMExecParams{VM: vm.ID, Argv: []string{guestinit.InitPath, guestinit.BuiltinAuthorize, key}}, false); err != nil || code != 0 {
						return fmt.Errorf("add your key to vm %s: exit %d %v", vm.Name, code, err)
					}
					hosts = append(hosts, fmt.Sprintf("banger-%s %s", vm.ID, vm.HostKey))
				}
				if err := writeKnownHosts(knownHosts, vms, hosts); err != nil {
					return err
				}
				for _, vm := range vms {
					fmt.Fprintf(a.stdout, "Host %s %s\n", vm.Name, vm.DNSName)
					fmt.Fprintf(a.stdout, "  User root\n")
					fmt.Fprintf(a.stdout, "  ProxyCommand %s --socket %s proxy %s\n", shellQuote(exe), shellQuote(cfg.Socket), vm.ID)
					fmt.Fprintf(a.stdout, "  HostKeyAlias banger-%s\n", vm.ID)
					fmt.Fprintf(a.stdout, "  UserKnownHostsFile %s\n", shellQuote(knownHosts))
					fmt.Fprintf(a.stdout, "  StrictHostKeyChecking yes\n\n")
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&identity, "identity", "", "public key to add to the VMs (default ~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_rsa.pub)")
	cmd.Flags().StringVar(&knownHosts, "known-hosts", "", "where to keep the VMs' host keys (default ~/.config/banger/known_hosts)")
	return cmd
}

// sshTargets are the named VMs, or every running one; each must run.
func (a *app) sshTargets(ctx context.Context, c *rpc.Client, names []string) ([]rpc.VM, error) {
	var out []rpc.VM
	if len(names) == 0 {
		all, err := c.ListVMs(ctx)
		if err != nil {
			return nil, err
		}
		for _, vm := range all {
			if vm.State == "running" {
				names = append(names, vm.ID)
			}
		}
	}
	for _, n := range names {
		var vm rpc.VM
		if err := c.Call(ctx, rpc.MethodVMShow, rpc.NameRef{Ref: n}, &vm); err != nil {
			return nil, err
		}
		if vm.State != "running" || vm.HostKey == "" {
			return nil, fmt.Errorf("vm %s is %s: start it first", vm.Name, vm.State)
		}
		out = append(out, vm)
	}
	return out, nil
}

func readIdentity(path string) (string, error) {
	candidates := []string{path}
	if path == "" {
		home, _ := os.UserHomeDir()
		candidates = []string{
			filepath.Join(home, ".ssh", "id_ed25519.pub"),
			filepath.Join(home, ".ssh", "id_ecdsa.pub"),
			filepath.Join(home, ".ssh", "id_rsa.pub"),
		}
	}
	for _, p := range candidates {
		data, err := os.ReadFile(p)
		if err == nil {
			return strings.TrimSpace(string(data)), nil
		}
		if path != "" || !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("read your public key: %w", err)
		}
	}
	return "", fmt.Errorf("no public key in ~/.ssh (id_ed25519.pub, id_ecdsa.pub, id_rsa.pub): make one with ssh-keygen or pass --identity")
}

// writeKnownHosts replaces the entries of vms in the file by hosts.
func writeKnownHosts(path string, vms []rpc.VM, hosts []string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	var keep []string
	if data, err := os.ReadFile(path); err == nil {
	lines:
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			for _, vm := range vms {
				if strings.HasPrefix(line, "banger-"+vm.ID+" ") {
					continue lines
				}
			}
			if line != "" {
				keep = append(keep, line)
			}
		}
	}
	keep = append(keep, hosts...)
	return os.WriteFile(path, []byte(strings.Join(keep, "\n")+"\n"), 0o600)
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'\\$`") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
