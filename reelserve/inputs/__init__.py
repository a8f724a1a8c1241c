"""The inputs users bring besides a prompt (issue 26): reference images, and later clips, checked
against limits and fitted to the requested size before anything is stored or queued."""
