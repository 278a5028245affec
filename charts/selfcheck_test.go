package charts

import (
	"context"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// selfCheck asks the API server whether the client's own identity may do
// something (SelfSubjectAccessReview), which is what RBAC would decide for
// a real request.
func selfCheck(ctx context.Context, cs *kubernetes.Clientset, verb, group, resource, subresource, namespace string) (bool, error) {
	return review(ctx, cs, &authorizationv1.ResourceAttributes{
		Verb: verb, Group: group, Resource: resource, Subresource: subresource, Namespace: namespace,
	})
}

// selfCheckNamed is selfCheck for one object by name, as RBAC's
// resourceNames see it.
func selfCheckNamed(ctx context.Context, cs *kubernetes.Clientset, verb, group, resource, namespace, name string) (bool, error) {
	return review(ctx, cs, &authorizationv1.ResourceAttributes{
		Verb: verb, Group: group, Resource: resource, Namespace: namespace, Name: name,
	})
}

func review(ctx context.Context, cs *kubernetes.Clientset, attrs *authorizationv1.ResourceAttributes) (bool, error) {
	r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attrs},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return r.Status.Allowed, nil
}
