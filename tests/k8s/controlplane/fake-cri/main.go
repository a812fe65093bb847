// Command fake-cri serves Kubernetes' own fake CRI runtime and image services (k8s.io/cri-client/pkg/fake, the
// one kubemark's hollow nodes use) on a Unix socket, so that a real kubelet can run pods without containers.
package main

import (
	"flag"
	"os"
	"os/signal"
	"syscall"

	fakeremote "k8s.io/cri-client/pkg/fake"
	"k8s.io/klog/v2"
)

func main() {
	endpoint := flag.String("endpoint", "", "where to listen, e.g. unix:///run/fake-cri.sock")
	flag.Parse()
	runtime := fakeremote.NewFakeRemoteRuntime()
	if err := runtime.Start(*endpoint); err != nil {
		klog.Fatalf("fake CRI: %v", err)
	}
	klog.Infof("fake CRI serving on %s", *endpoint)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	runtime.Stop()
}
