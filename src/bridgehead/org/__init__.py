"""Organization: business units and the people in them."""
