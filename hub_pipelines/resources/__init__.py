"""One module per external service, its local and its real implementation side by side: media/, orders/ and
analytics/ hold the services (and the settings) one workflow uses, the top the ones several share."""
