"""Power meter plugins (the `power_meters` family): rapl, nvml, http, command. See base.py."""
