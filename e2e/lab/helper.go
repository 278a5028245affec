package lab

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/zerohop/zerohop/e2e/echo"
)

// HelperArg is the first argument that makes a test binary (through
// HelperMain) run a lab helper instead of its tests.
const HelperArg = "zh-lab-helper"

// HelperMain runs a helper and exits if this process was started as one.
// Test packages that use the lab call it first thing in TestMain.
func HelperMain() {
	if len(os.Args) < 2 || os.Args[1] != HelperArg {
		return
	}
	if err := RunHelper(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "lab helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// RunHelper runs one lab helper role in this process, which the lab has
// started inside a namespace: "echo" (a Pod's echo server), "bgp-peer"
// (a test GoBGP peer driven over stdin) or "kubelet" (a node's kubelet
// stand-in, in the root namespace). It returns when the helper ends.
func RunHelper(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("helper: missing role (echo, bgp-peer, kubelet)")
	}
	switch args[0] {
	case "echo":
		fs := flag.NewFlagSet("echo", flag.ContinueOnError)
		name := fs.String("name", "", "Pod name to answer with")
		tcp := fs.Int("tcp", echo.DefaultTCPPort, "TCP port")
		udp := fs.Int("udp", echo.DefaultUDPPort, "UDP port")
		httpPort := fs.Int("http", echo.DefaultHTTPPort, "HTTP port")
		termDelay := fs.Duration("term-delay", 0, "keep serving this long after SIGTERM (a slow shutdown)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		go func() {
			<-sigs
			time.Sleep(*termDelay)
			cancel()
		}()
		return echo.Serve(ctx, echo.Config{Name: *name, TCPPort: *tcp, UDPPort: *udp, HTTPPort: *httpPort})
	case "bgp-peer":
		return runPeerHelper(args[1:], os.Stdin, os.Stdout)
	case "kubelet":
		return runKubelet(args[1:])
	default:
		return fmt.Errorf("helper: unknown role %q", args[0])
	}
}
