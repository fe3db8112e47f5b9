//! SNS alerts and CloudWatch metrics through the SDK.

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use super::sdk::{cloud_error, SdkCloud};
use super::{Datum, Metrics, Notify};
use crate::error::CloudError;

/// PutMetricData takes at most 1,000 metrics a call; 20 keeps each request small.
const DATA_PER_CALL: usize = 20;
/// SNS subjects are at most 100 ASCII characters, with no line breaks.
const SUBJECT_LIMIT: usize = 100;

impl Notify for SdkCloud {
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> Result<String, CloudError> {
        let subject: String = subject
            .chars()
            .map(|c| if c.is_ascii() && !c.is_control() { c } else { ' ' })
            .take(SUBJECT_LIMIT)
            .collect();
        let out = self
            .sns
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| cloud_error("Publish", e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

fn datum(d: &Datum) -> MetricDatum {
    let mut m = MetricDatum::builder().metric_name(&d.name).value(d.value).unit(StandardUnit::from(d.unit.as_str()));
    for (name, value) in &d.dimensions {
        m = m.dimensions(Dimension::builder().name(name).value(value).build());
    }
    m.build()
}

impl Metrics for SdkCloud {
    async fn put_metrics(&self, namespace: &str, data: &[Datum]) -> Result<(), CloudError> {
        for chunk in data.chunks(DATA_PER_CALL) {
            self.cloudwatch
                .put_metric_data()
                .namespace(namespace)
                .set_metric_data(Some(chunk.iter().map(datum).collect()))
                .send()
                .await
                .map_err(|e| cloud_error("PutMetricData", e))?;
        }
        Ok(())
    }

    async fn put_dashboard(&self, name: &str, body: &str) -> Result<(), CloudError> {
        let out = self
            .cloudwatch
            .put_dashboard()
            .dashboard_name(name)
            .dashboard_body(body)
            .send()
            .await
            .map_err(|e| cloud_error("PutDashboard", e))?;
        // CloudWatch stores a dashboard with problems and lists them; an invalid one is an error.
        if let Some(problem) = out.dashboard_validation_messages().first() {
            tracing::warn!(
                "dashboard {name}: {} ({})",
                problem.message().unwrap_or_default(),
                problem.data_path().unwrap_or_default()
            );
        }
        Ok(())
    }
}
