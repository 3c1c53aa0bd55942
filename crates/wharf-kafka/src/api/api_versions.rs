//! ApiVersions: the implemented (api, min..max) ranges, and nothing else. Features and
//! tagged fields stay at their defaults, so the encoder omits them (librdkafka 2.0.2,
//! in Debian's kcat, mis-skips tagged fields that carry a default value).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;

use super::supported_apis;

pub fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = supported_apis()
        .iter()
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.key as i16)
                .with_min_version(a.min)
                .with_max_version(a.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}
