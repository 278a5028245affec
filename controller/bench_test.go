package controller_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/zerohop/zerohop/controller"
)

// childEnv makes the test binary run a controller instead of tests, so the
// benchmark measures the controller's own memory in its own process.
const childEnv = "ZEROHOP_CONTROLLER_CHILD_KUBECONFIG"

func runChild() int {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv(childEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	c, err := controller.New(cfg, controller.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}
