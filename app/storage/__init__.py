"""Avatar storage: where uploaded images go (Cloudinary or the local disk), chosen by settings."""
