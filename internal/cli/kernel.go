package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/rpc"
)

func (a *app) kernelCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "kernel",
		Aliases: []string{"kernels"},
		Short:   "Import, fetch, list and remove guest kernels",
	}
	cmd.AddCommand(a.kernelImportCommand(), a.kernelFetchCommand(), a.kernelLsCommand(), a.kernelShowCommand(), a.kernelRmCommand())
	return cmd
}

func (a *app) kernelImportCommand() *cobra.Command {
	var nameFlag, initrd string
	var makeDefault bool
	cmd := &cobra.Command{
		Use:   "import VMLINUX --name N",
		Short: "Import an uncompressed x86-64 vmlinux (and optional initrd)",
		Long:  "Import an uncompressed x86-64 vmlinux (Firecracker's format) and an optional initrd. scripts/guest-kernel.sh makes both from Debian's cloud kernel.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vmlinux, err := absPath(args[0])
			if err != nil {
				return err
			}
			p := rpc.KernelImportParams{Vmlinux: vmlinux, Name: nameFlag, Default: makeDefault}
			if initrd != "" {
				if p.Initrd, err = absPath(initrd); err != nil {
					return err
				}
			}
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				var k rpc.Kernel
				if err := c.Call(cmd.Context(), rpc.MethodKernelImport, p, &k); err != nil {
					return err
				}
				return a.printKernelAdded(k)
			})
		},
	}
	cmd.Flags().StringVar(&nameFlag, "name", "", "kernel name (required)")
	cmd.Flags().StringVar(&initrd, "initrd", "", "initrd for this kernel")
	cmd.Flags().BoolVar(&makeDefault, "default", false, "make it the default kernel")
	cmd.MarkFlagRequired("name")
	return cmd
}

func (a *app) printKernelAdded(k rpc.Kernel) error {
	if a.jsonOutput() {
		return printJSON(a.stdout, k)
	}
	def := ""
	if k.Default {
		def = " (default)"
	}
	fmt.Fprintf(a.stdout, "Kernel %s added%s: %s, version %s\n", k.Name, def, k.ID, dash(k.Version))
	return nil
}

func (a *app) kernelFetchCommand() *cobra.Command {
	var nameFlag, sum string
	var makeDefault, cancelOnInterrupt bool
	cmd := &cobra.Command{
		Use:   "fetch URL --name N",
		Short: "Fetch a vmlinux, or a tar bundle with vmlinux and initrd, over http(s) or file://",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withClient(ctx, func(c *rpc.Client) error {
				var started rpc.OpStarted
				if err := c.Call(ctx, rpc.MethodKernelFetch, rpc.KernelFetchParams{URL: args[0], SHA256: sum, Name: nameFlag, Default: makeDefault}, &started); err != nil {
					return err
				}
				final, err := a.followOp(ctx, c, started.OpID, cancelOnInterrupt, "banger op watch "+started.OpID)
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return nil
				}
				var k rpc.Kernel
				if err := json.Unmarshal(final.Result, &k); err != nil {
					return fmt.Errorf("decode the operation's result: %w", err)
				}
				return a.printKernelAdded(k)
			})
		},
	}
	cmd.Flags().StringVar(&nameFlag, "name", "", "kernel name (required)")
	cmd.Flags().StringVar(&sum, "sha256", "", "expected SHA-256 of the download")
	cmd.Flags().BoolVar(&makeDefault, "default", false, "make it the default kernel")
	cmd.Flags().BoolVar(&cancelOnInterrupt, "cancel-on-interrupt", false, "cancel the fetch in the daemon on Ctrl-C")
	cmd.MarkFlagRequired("name")
	return cmd
}

func (a *app) kernelLsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List kernels",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				var res rpc.KernelListResult
				if err := c.Call(cmd.Context(), rpc.MethodKernelList, nil, &res); err != nil {
					return err
				}
				if a.jsonOutput() {
					return printJSON(a.stdout, res.Kernels)
				}
				t := newTable(a.stdout, "NAME", "ID", "VERSION", "INITRD", "DEFAULT", "SIZE", "CREATED")
				now := time.Now()
				for _, k := range res.Kernels {
					t.row(k.Name, short(k.ID), dash(k.Version), yesNo(k.HasInitrd), yesNo(k.Default), humanBytes(k.SizeBytes), ago(k.CreatedAt, now))
				}
				return t.flush()
			})
		},
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (a *app) kernelShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show one kernel",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				var k rpc.Kernel
				if err := c.Call(cmd.Context(), rpc.MethodKernelShow, rpc.NameRef{Ref: args[0]}, &k); err != nil {
					return err
				}
				if a.jsonOutput() {
					return printJSON(a.stdout, k)
				}
				fmt.Fprintf(a.stdout, "Name:     %s\nID:       %s\nVersion:  %s\nSource:   %s\nInitrd:   %s\nDefault:  %s\nSize:     %s\nUsed by:  %s\nCreated:  %s\n",
					k.Name, k.ID, dash(k.Version), dash(k.Source), yesNo(k.HasInitrd), yesNo(k.Default), humanBytes(k.SizeBytes),
					dash(strings.Join(k.UsedBy, ", ")), k.CreatedAt.Local().Format(time.RFC3339))
				return nil
			})
		},
	}
}

func (a *app) kernelRmCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove kernels (refused while an image or VM uses one)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				for _, ref := range args {
					if err := c.Call(cmd.Context(), rpc.MethodKernelRemove, rpc.NameRef{Ref: ref}, nil); err != nil {
						return err
					}
					if !a.jsonOutput() {
						fmt.Fprintf(a.stdout, "Removed kernel %s\n", ref)
					}
				}
				return nil
			})
		},
	}
}
