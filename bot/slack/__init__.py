"""The Slack adapter: the only package that imports slack_bolt and slack_sdk. It translates; the Studio
decides."""
