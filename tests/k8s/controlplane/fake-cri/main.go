// Command fake-cri serves Kubernetes' own fake CRI runtime and image services (k8s.io/cri-client/pkg/fake, the
// one kubemark's hollow nodes use) on a Unix socket, so that a real kubelet can run pods without containers.
//
// One change relative to Kubernetes' fake: there, a started container runs until the kubelet stops it, so an
// init container never completes and its pod never starts its app containers. Here a container whose name
// (ContainerConfig.Metadata.Name, the pod spec's container name) starts with "init-exits-" exits by itself
// with code 0 about exitAfter after StartContainer: its status becomes CONTAINER_EXITED, exitCode 0, reason
// "Completed", finishedAt set, as a real runtime reports a process that ended. The kubelet's PLEG finds it at
// its next relist. Every other container behaves exactly as in Kubernetes' fake.
package main

import (
	"flag"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	apitest "k8s.io/cri-api/pkg/apis/testing"
	fakeremote "k8s.io/cri-client/pkg/fake"
	"k8s.io/klog/v2"
)

// exitingPrefix marks a container that completes on its own (the CRI carries no init-container flag).
const exitingPrefix = "init-exits-"

const exitAfter = 500 * time.Millisecond

func main() {
	endpoint := flag.String("endpoint", "", "where to listen, e.g. unix:///run/fake-cri.sock")
	flag.Parse()
	runtime := fakeremote.NewFakeRemoteRuntime()
	if err := runtime.Start(*endpoint); err != nil {
		klog.Fatalf("fake CRI: %v", err)
	}
	klog.Infof("fake CRI serving on %s", *endpoint)
	done := make(chan struct{})
	go exitShortLived(runtime.RuntimeService, done)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	close(done)
	runtime.Stop()
}

// exitShortLived ends every running "init-exits-" container once it has run for exitAfter.
func exitShortLived(service *apitest.FakeRuntimeService, done <-chan struct{}) {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-done:
			return
		case <-ticker.C:
			exitDue(service, time.Now())
		}
	}
}

func exitDue(service *apitest.FakeRuntimeService, now time.Time) {
	service.Lock()
	defer service.Unlock()
	for id, c := range service.Containers {
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING || c.Metadata == nil ||
			!strings.HasPrefix(c.Metadata.Name, exitingPrefix) || now.UnixNano()-c.StartedAt < int64(exitAfter) {
			continue
		}
		c.State = runtimeapi.ContainerState_CONTAINER_EXITED
		c.ExitCode = 0
		c.Reason = "Completed"
		c.FinishedAt = now.UnixNano()
		klog.Infof("fake CRI: container %s (%s) exited with code 0", id, c.Metadata.Name)
	}
}
