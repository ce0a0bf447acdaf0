"""Staging: the Vagrant VMs. Let's Encrypt's staging CA; DNS is not public there."""

deploy_env = "staging"
acme_directory = "https://acme-staging-v02.api.letsencrypt.org/directory"
preflight_check_dns = False
