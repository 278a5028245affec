package apiserver

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestServerLifecycle starts a real server, checks admin access through the
// kubeconfig, that RBAC limits a ServiceAccount until a Role grants it, that
// the CRDs are served, and that Stop leaves no process behind.
func TestServerLifecycle(t *testing.T) {
	ctx := context.Background()
	s, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	etcdPID, apiPID := s.EtcdPID(), s.APIServerPID()
	defer func() { _ = s.Stop() }()

	kc, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	admin := kubernetes.NewForConfigOrDie(kc)
	if _, err := admin.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("admin via kubeconfig: %v", err)
	}
	groups, err := admin.Discovery().ServerResourcesForGroupVersion("zerohop.io/v1alpha1")
	if err != nil {
		t.Fatalf("CRDs not served: %v", err)
	}
	if len(groups.APIResources) < 5 {
		t.Fatalf("zerohop.io/v1alpha1 serves %d resources, want at least 5", len(groups.APIResources))
	}

	saCfg, err := s.ServiceAccountConfig(ctx, "zh-rbac", "reader")
	if err != nil {
		t.Fatal(err)
	}
	sa := kubernetes.NewForConfigOrDie(saCfg)
	_, err = sa.CoreV1().ConfigMaps("zh-rbac").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("list configmaps without a Role: want Forbidden, got %v", err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: "zh-rbac"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"}}},
	}
	if _, err := admin.RbacV1().Roles("zh-rbac").Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: "zh-rbac"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: "zh-rbac"}},
	}
	if _, err := admin.RbacV1().RoleBindings("zh-rbac").Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// RBAC is served from an informer cache, so the grant takes a moment.
	err = wait.PollUntilContextTimeout(ctx, 100e6, 10e9, true, func(ctx context.Context) (bool, error) {
		_, err := sa.CoreV1().ConfigMaps("zh-rbac").List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("list configmaps with a Role: still refused")
	}
	_, err = sa.CoreV1().Secrets("zh-rbac").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("list secrets (not granted): want Forbidden, got %v", err)
	}
	// Creating a Service with both families proves the dual-stack
	// ClusterIP ranges are configured.
	policy := corev1.IPFamilyPolicyRequireDualStack
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "dual", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			IPFamilyPolicy: &policy,
			Ports:          []corev1.ServicePort{{Port: 80}},
		},
	}
	got, err := admin.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("dual-stack Service: %v", err)
	}
	if len(got.Spec.ClusterIPs) != 2 {
		t.Fatalf("dual-stack Service got ClusterIPs %v, want two", got.Spec.ClusterIPs)
	}

	dir := s.DataDir
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{etcdPID, apiPID} {
		if alive(pid) {
			t.Errorf("process %d still running after Stop", pid)
		}
	}
	if dir == "" {
		t.Fatal("no data dir recorded")
	}
	if _, err := Start(ctx, Options{CRDDir: t.TempDir()}); err == nil {
		t.Fatal("Start with an empty CRD dir: want error")
	}
}
