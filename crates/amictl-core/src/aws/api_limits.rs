//! The request rates AWS documents per account, Region and action: what [`super::pacing`]
//! keeps below.
//!
//! EC2: Amazon EC2 Developer Guide, "Request throttling for the Amazon EC2 API"
//! (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>). "Amazon EC2
//! throttles EC2 API requests for each AWS account on a per-Region basis", "each API is
//! evaluated individually", with a token bucket per action: the table "Request token bucket
//! sizes and refill rates" gives non-mutating actions (`Describe*`, `List*`, `Search*`, `Get*`)
//! 100 tokens refilled at 20 a second, unfiltered and unpaginated non-mutating actions 50 / 10,
//! mutating actions 50 / 5, resource-intensive actions 50 / 5, and the "Uncategorized actions"
//! their own ([`UNCATEGORIZED`]). The resource token buckets (RunInstances and friends, one token
//! per instance) are not modelled: amictl launches a handful of instances at a time.
//!
//! A few `Describe*` actions take their token from a smaller bucket (50 / 10) when sent with
//! neither a filter nor pagination. The pacer keys a bucket by action alone, so for those
//! ([`UNFILTERED_UNPAGINATED`]) it keeps below the smaller of the two: never too fast for
//! either.
//!
//! CloudTrail: API Reference, LookupEvents: "The rate of lookup requests is limited to two per
//! second, per account, per Region" (a bucket of 2 refilled at 2 a second).

/// A token bucket as AWS documents it: how many tokens it holds and how many come back a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

const NON_MUTATING: Bucket = Bucket { capacity: 100.0, refill_per_sec: 20.0 };
const UNFILTERED: Bucket = Bucket { capacity: 50.0, refill_per_sec: 10.0 };
const MUTATING: Bucket = Bucket { capacity: 50.0, refill_per_sec: 5.0 };
const LOOKUP_EVENTS: Bucket = Bucket { capacity: 2.0, refill_per_sec: 2.0 };

/// Non-mutating actions with a second, smaller bucket for requests without filter or paging.
pub const UNFILTERED_UNPAGINATED: &[&str] = &[
    "DescribeInstances",
    "DescribeInstanceStatus",
    "DescribeNetworkInterfaces",
    "DescribeSecurityGroups",
    "DescribeSnapshots",
    "DescribeSpotInstanceRequests",
    "DescribeVolumes",
];

/// Resource-intensive actions: the mutating bucket's size (50 / 5), listed for their category.
const RESOURCE_INTENSIVE: &[&str] = &[
    "AcceptVpcPeeringConnection",
    "AuthorizeSecurityGroupIngress",
    "CancelSpotInstanceRequests",
    "CreateKeyPair",
    "CreateVpcPeeringConnection",
    "DeleteVpcPeeringConnection",
    "RejectVpcPeeringConnection",
    "RevokeSecurityGroupIngress",
    "RequestSpotInstances",
];

/// The guide's "Uncategorized actions": `(action, bucket capacity, refill a second)`.
pub const UNCATEGORIZED: &[(&str, f64, f64)] = &[
    ("AcceptVpcEndpointConnections", 10.0, 1.0),
    ("AdvertiseByoipCidr", 1.0, 0.1),
    ("AssignIpv6Addresses", 100.0, 5.0),
    ("AssignPrivateIpAddresses", 100.0, 5.0),
    ("AssignPrivateNatGatewayAddress", 10.0, 1.0),
    ("AssociateCapacityReservationBillingOwner", 1.0, 0.5),
    ("AssociateEnclaveCertificateIamRole", 10.0, 1.0),
    ("AssociateIamInstanceProfile", 100.0, 5.0),
    ("AssociateNatGatewayAddress", 10.0, 1.0),
    ("AttachVerifiedAccessTrustProvider", 10.0, 2.0),
    ("AuthorizeClientVpnIngress", 5.0, 2.0),
    ("CancelDeclarativePoliciesReport", 1.0, 1.0),
    ("CopyImage", 100.0, 1.0),
    ("CreateClientVpnRoute", 5.0, 2.0),
    ("CreateCoipCidr", 5.0, 1.0),
    ("CreateCoipPool", 5.0, 1.0),
    ("CreateDefaultSubnet", 1.0, 1.0),
    ("CreateDefaultVpc", 1.0, 1.0),
    ("CreateLaunchTemplateVersion", 100.0, 5.0),
    ("CreateNatGateway", 10.0, 1.0),
    ("CreateNetworkInterface", 100.0, 5.0),
    ("CreateRestoreImageTask", 50.0, 0.1),
    ("CreateSnapshot", 100.0, 5.0),
    ("CreateSnapshots", 100.0, 5.0),
    ("CreateSpotDatafeedSubscription", 50.0, 3.0),
    ("CreateStoreImageTask", 50.0, 0.1),
    ("CreateSubnetCidrReservation", 5.0, 1.0),
    ("CreateTags", 100.0, 10.0),
    ("CreateVerifiedAccessEndpoint", 20.0, 4.0),
    ("CreateVerifiedAccessGroup", 10.0, 2.0),
    ("CreateVerifiedAccessInstance", 10.0, 2.0),
    ("CreateVerifiedAccessTrustProvider", 10.0, 2.0),
    ("CreateVolume", 100.0, 5.0),
    ("CreateVpcEndpoint", 4.0, 0.3),
    ("CreateVpcEndpointServiceConfiguration", 10.0, 1.0),
    ("DeleteClientVpnRoute", 5.0, 2.0),
    ("DeleteCoipCidr", 5.0, 1.0),
    ("DeleteCoipPool", 5.0, 1.0),
    ("DeleteCoipPoolPermission", 5.0, 1.0),
    ("DeleteNatGateway", 10.0, 1.0),
    ("DeleteNetworkInterface", 100.0, 5.0),
    ("DeleteSnapshot", 100.0, 5.0),
    ("DeleteSpotDatafeedSubscription", 50.0, 3.0),
    ("DeleteSubnetCidrReservation", 5.0, 1.0),
    ("DeleteQueuedReservedInstances", 5.0, 5.0),
    ("DeleteTags", 100.0, 10.0),
    ("DeleteVerifiedAccessEndpoint", 20.0, 4.0),
    ("DeleteVerifiedAccessGroup", 10.0, 2.0),
    ("DeleteVerifiedAccessInstance", 10.0, 2.0),
    ("DeleteVerifiedAccessTrustProvider", 10.0, 2.0),
    ("DeleteVolume", 100.0, 5.0),
    ("DeleteVpcEndpoints", 4.0, 0.3),
    ("DeleteVpcEndpointServiceConfigurations", 10.0, 1.0),
    ("DeprovisionByoipCidr", 1.0, 0.1),
    ("DeregisterImage", 100.0, 5.0),
    ("DescribeAggregateIdFormat", 10.0, 10.0),
    ("DescribeByoipCidrs", 1.0, 0.5),
    ("DescribeCapacityBlockExtensionOfferings", 10.0, 0.15),
    ("DescribeCapacityBlockOfferings", 10.0, 0.15),
    ("DescribeDeclarativePoliciesReports", 5.0, 5.0),
    ("DescribeHostReservations", 5.0, 2.0),
    ("DescribeHostReservationOfferings", 5.0, 2.0),
    ("DescribeIdentityIdFormat", 10.0, 10.0),
    ("DescribeIdFormat", 10.0, 10.0),
    ("DescribeInstanceTopology", 1.0, 1.0),
    ("DescribeMovingAddresses", 1.0, 1.0),
    ("DescribePrincipalIdFormat", 10.0, 10.0),
    ("DescribeReservedInstancesOfferings", 10.0, 10.0),
    ("DescribeSecurityGroupReferences", 20.0, 5.0),
    ("DescribeSpotDatafeedSubscription", 100.0, 13.0),
    ("DescribeSpotFleetInstances", 100.0, 5.0),
    ("DescribeSpotFleetRequestHistory", 100.0, 5.0),
    ("DescribeSpotFleetRequests", 50.0, 3.0),
    ("DescribeStaleSecurityGroups", 20.0, 5.0),
    ("DescribeStoreImageTasks", 50.0, 0.5),
    ("DescribeVerifiedAccessInstanceLoggingConfigurations", 10.0, 2.0),
    ("DetachVerifiedAccessTrustProvider", 10.0, 2.0),
    ("DisableFastLaunch", 5.0, 2.0),
    ("DisableImageBlockPublicAccess", 1.0, 0.1),
    ("DisableSnapshotBlockPublicAccess", 1.0, 0.1),
    ("DisassociateCapacityReservationBillingOwner", 1.0, 0.5),
    ("DisassociateEnclaveCertificateIamRole", 10.0, 1.0),
    ("DisassociateIamInstanceProfile", 100.0, 5.0),
    ("DisassociateNatGatewayAddress", 10.0, 1.0),
    ("EnableFastLaunch", 5.0, 2.0),
    ("EnableImageBlockPublicAccess", 1.0, 0.1),
    ("EnableSnapshotBlockPublicAccess", 1.0, 0.1),
    ("GetAssociatedEnclaveCertificateIamRoles", 10.0, 1.0),
    ("GetDeclarativePoliciesReportSummary", 5.0, 5.0),
    ("GetHostReservationPurchasePreview", 5.0, 2.0),
    ("ModifyImageAttribute", 100.0, 5.0),
    ("ModifyInstanceMetadataDefaults", 2.0, 2.0),
    ("ModifyInstanceMetadataOptions", 100.0, 5.0),
    ("ModifyLaunchTemplate", 100.0, 5.0),
    ("ModifyNetworkInterfaceAttribute", 100.0, 5.0),
    ("ModifySnapshotAttribute", 100.0, 5.0),
    ("ModifyVerifiedAccessEndpoint", 20.0, 4.0),
    ("ModifyVerifiedAccessEndpointPolicy", 20.0, 4.0),
    ("ModifyVerifiedAccessGroup", 10.0, 2.0),
    ("ModifyVerifiedAccessGroupPolicy", 20.0, 4.0),
    ("ModifyVerifiedAccessInstance", 10.0, 2.0),
    ("ModifyVerifiedAccessInstanceLoggingConfiguration", 10.0, 2.0),
    ("ModifyVerifiedAccessTrustProvider", 10.0, 2.0),
    ("ModifyVpcEndpoint", 4.0, 0.3),
    ("ModifyVpcEndpointServiceConfiguration", 10.0, 1.0),
    ("MoveAddressToVpc", 1.0, 1.0),
    ("ProvisionByoipCidr", 1.0, 0.1),
    ("PurchaseCapacityBlock", 10.0, 0.15),
    ("PurchaseCapacityBlockExtension", 10.0, 0.15),
    ("PurchaseHostReservation", 5.0, 2.0),
    ("PurchaseReservedInstancesOffering", 5.0, 5.0),
    ("RejectVpcEndpointConnections", 10.0, 1.0),
    ("RestoreAddressToClassic", 1.0, 1.0),
    ("RevokeClientVpnIngress", 5.0, 2.0),
    ("RunInstances", 5.0, 2.0),
    ("StartDeclarativePoliciesReport", 1.0, 1.0),
    ("StartInstances", 5.0, 2.0),
    ("TerminateInstances", 100.0, 5.0),
    ("UnassignPrivateIpAddresses", 100.0, 5.0),
    ("UnassignPrivateNatGatewayAddress", 10.0, 1.0),
    ("WithdrawByoipCidr", 1.0, 0.1),
];

/// The bucket a request of `service` (`EC2`, `CloudTrail`: the SDK's service names) and `action`
/// draws on, or None when AWS documents no per-action bucket amictl keeps below.
pub fn bucket(service: &str, action: &str) -> Option<Bucket> {
    if service.eq_ignore_ascii_case("cloudtrail") {
        return (action == "LookupEvents").then_some(LOOKUP_EVENTS);
    }
    if !service.eq_ignore_ascii_case("ec2") {
        return None;
    }
    if let Some((_, capacity, refill_per_sec)) = UNCATEGORIZED.iter().find(|(a, _, _)| *a == action) {
        return Some(Bucket { capacity: *capacity, refill_per_sec: *refill_per_sec });
    }
    if UNFILTERED_UNPAGINATED.contains(&action) {
        return Some(UNFILTERED);
    }
    if RESOURCE_INTENSIVE.contains(&action) {
        return Some(MUTATING);
    }
    let non_mutating = ["Describe", "List", "Search", "Get"].iter().any(|p| action.starts_with(p));
    Some(if non_mutating { NON_MUTATING } else { MUTATING })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guides_categories() {
        let b = |s, a| bucket(s, a).map(|b| (b.capacity, b.refill_per_sec));
        assert_eq!(b("EC2", "DescribeImageAttribute"), Some((100.0, 20.0)));
        assert_eq!(b("EC2", "DescribeImages"), Some((100.0, 20.0)));
        assert_eq!(b("EC2", "DescribeSnapshots"), Some((50.0, 10.0)), "the smaller of its two buckets");
        assert_eq!(b("EC2", "CreateImage"), Some((50.0, 5.0)), "in no list: mutating");
        assert_eq!(b("EC2", "DeregisterImage"), Some((100.0, 5.0)));
        assert_eq!(b("EC2", "ModifyImageAttribute"), Some((100.0, 5.0)));
        assert_eq!(b("EC2", "CreateTags"), Some((100.0, 10.0)));
        assert_eq!(b("EC2", "CopyImage"), Some((100.0, 1.0)));
        assert_eq!(b("EC2", "DescribeSpotFleetRequests"), Some((50.0, 3.0)), "uncategorized before the prefix");
        assert_eq!(b("CloudTrail", "LookupEvents"), Some((2.0, 2.0)));
        assert_eq!(b("SSM", "GetParameters"), None);
    }
}
