
    function Access( AccessToken) => (HTTPRequest);
    function FanOut(HTTPResponse , Topic) => (HTTPRequests);
    function Render(HTTPResponses )   => (HTMLOutput);
    
    function HTTP(Request) => ( Response) ;
    